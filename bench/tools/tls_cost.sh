#!/usr/bin/env bash
# Broker CPU per GB consumed over TLS against plaintext, in the same run (issue 20): one broker
# (shard on CPU 0) with a PLAINTEXT and an SSL listener; a topic of about SIZE_MB is consumed
# whole by kcat (on CPU 1) over each listener in turn, ROUNDS times; the broker's CPU time
# (utime+stime from /proc) is read around each consume. Plaintext fetches splice; TLS copies.
# Usage: flock /tmp/build.lock bash bench/tools/tls_cost.sh [SIZE_MB] [ROUNDS]
set -eu
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
SIZE_MB=${1:-512}
ROUNDS=${2:-3}
W=/tmp/tls_cost
rm -rf $W && mkdir -p $W
WORK=$W
cd $W
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key -out ca.crt -days 1 -subj /CN=ca 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout b.key -out b.csr -subj /CN=localhost 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\n' > b.ext
openssl x509 -req -in b.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 -extfile b.ext -out b.crt 2>/dev/null
cat b.key b.crt > keystore.pem
cd - > /dev/null
PLAIN=$(free_port); SSL=$(free_port)
start_broker logs --override listeners=PLAINTEXT://127.0.0.1:$PLAIN,SSL://127.0.0.1:$SSL \
    --override ssl.keystore.type=PEM --override ssl.keystore.location=$W/keystore.pem
PID=$BROKER_PID
# SIZE_MB of 1000-byte records.
python3 -c "
import sys
line = b'x' * 999 + b'\n'
sys.stdout.buffer.write(line * ($SIZE_MB * 1048))" | pin_client kcat -P -b 127.0.0.1:$PLAIN -t tls-cost -X linger.ms=20 -X batch.size=1000000
BYTES=$(du -sb $W/logs/tls-cost-0 | cut -f1)
cpu_ticks() { awk '{print $14 + $15}' /proc/$PID/stat; }
HZ=$(getconf CLK_TCK)
consume() { # $1 port, $2.. kcat options
    local p=$1; shift
    pin_client kcat -C -b 127.0.0.1:$p -t tls-cost -o beginning -e -q -X fetch.max.bytes=52428800 "$@" > /dev/null
}
echo "topic bytes on disk: $BYTES"
for round in $(seq $ROUNDS); do
    for listener in plaintext tls; do
        before=$(cpu_ticks); start=$(date +%s.%N)
        if [ $listener = plaintext ]; then consume $PLAIN; else consume $SSL -X security.protocol=SSL -X ssl.ca.location=$W/ca.crt; fi
        end=$(date +%s.%N); after=$(cpu_ticks)
        python3 -c "
cpu = ($after - $before) / $HZ; secs = $end - $start; gb = $BYTES / 1e9
print(f'round $round $listener: {cpu / gb:.3f} broker CPU-s per GB, {gb / secs:.2f} GB/s ({cpu:.2f} CPU-s, {secs:.2f} s)')"
    done
done
grep -E "TLS listener|plaintext listener" $W/logs.log | head -2
