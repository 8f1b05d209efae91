#!/usr/bin/env bash
# Installs the third-party Kafka clients that tests/clients/roundtrip.{py,js} drive:
# kcat and ZooKeeper (Debian), confluent-kafka, kafka-python and aiokafka (a venv in .venv), kafkajs (node_modules),
# and a JDK with Maven for tests/java (which fetches Apache Kafka's jars itself).
# Idempotent: a second run installs nothing and touches no network. Run as root.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

# Pinned so a client upgrade can't silently change what the broker is tested against.
# lz4, python-snappy and zstandard are kafka-python's optional codecs: without them it
# refuses those compression types. crc32c only speeds up its record checksums.
PY_PINS=(
    confluent-kafka==2.16.1
    kafka-python==3.0.12
    lz4==4.4.5
    python-snappy==0.7.3
    zstandard==0.25.0
    crc32c==2.9.post0
    aiokafka==0.14.0
)
KAFKAJS_VERSION=2.2.4   # keep equal to package.json

apt_updated=
apt_install() {
    if [[ -z $apt_updated ]]; then
        apt-get update -qq
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

command -v kcat >/dev/null || apt_install kcat
# Cluster tests start a real ZooKeeper (Debian's package; it starts no service) with java.
command -v java >/dev/null || apt_install default-jre-headless
# tests/java (Apache Kafka's Java client, tools and Streams) builds with a JDK and Maven.
command -v javac >/dev/null || apt_install openjdk-17-jdk-headless
command -v mvn >/dev/null || apt_install maven
[[ -f /usr/share/java/zookeeper.jar ]] || apt_install zookeeper
command -v npm >/dev/null || apt_install npm

if [[ ! -x .venv/bin/python ]]; then
    # Debian's own python3 lacks ensurepip until python3-venv is installed.
    if ! python3 -m venv .venv 2>/dev/null; then
        rm -rf .venv
        apt_install python3-venv
        python3 -m venv .venv
    fi
fi
installed=$(.venv/bin/python -m pip freeze --disable-pip-version-check 2>/dev/null)
for pin in "${PY_PINS[@]}"; do
    if ! grep -qixF "$pin" <<<"$installed"; then
        .venv/bin/python -m pip install -q --disable-pip-version-check "${PY_PINS[@]}"
        break
    fi
done

have_kafkajs=$(node -p "require('./node_modules/kafkajs/package.json').version" 2>/dev/null || true)
if [[ $have_kafkajs != "$KAFKAJS_VERSION" ]]; then
    if [[ -f package-lock.json ]]; then
        npm ci --no-audit --no-fund --loglevel=error >/dev/null
    else
        npm install --no-audit --no-fund --loglevel=error >/dev/null
    fi
fi

echo "clients ready: kcat, confluent-kafka, kafka-python ($PWD/.venv), kafkajs $KAFKAJS_VERSION"
