#!/usr/bin/env python3
"""Issue 21's fetch session check: what an idle consumer following many partitions costs, with
fetch sessions (KIP-227) and without.

    tests/clients/.venv/bin/python bench/tools/fetch_session_cost.py \
        --broker target/release/broker --partitions 3000 --seconds 20 [--shards 2]

For each setting of `max.incremental.fetch.session.cache.slots` (1000, Kafka's default, then 0:
sessions off) it starts the broker binary in a fresh data directory, creates one topic of
`--partitions` partitions, and lets a kafka-python 3.0 consumer (which uses sessions when the
broker grants one) follow every partition from its end: nothing is produced. After a warm-up it
measures over `--seconds`: the bytes on the consumer's sockets both ways (the kernel's per-socket
counters, `ss -ti`), the Fetch round trips (the broker's FetchConsumer request count), and the
broker's CPU time (/proc/PID/stat). Prints bytes per idle Fetch round trip and broker CPU.
"""
import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
from many_partitions import Broker, free_port  # noqa: E402

from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402
from kafka import KafkaConsumer, TopicPartition  # noqa: E402


def scrape(address):
    text = urllib.request.urlopen(f"http://{address}/metrics", timeout=10).read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def socket_bytes(port):
    """Bytes sent and received by this process's TCP connections to the broker's port."""
    out = subprocess.run(["ss", "-tinpH", "dst", f"127.0.0.1:{port}"], capture_output=True, text=True, check=True).stdout
    sent = received = 0
    mine = f"pid={os.getpid()},"
    blocks = re.split(r"\n(?=\S)", out)
    for block in blocks:
        if mine not in block:
            continue
        sent += sum(int(v) for v in re.findall(r"bytes_sent:(\d+)", block))
        received += sum(int(v) for v in re.findall(r"bytes_received:(\d+)", block))
    return sent, received


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(binary, shards, partitions, seconds, slots):
    root = tempfile.mkdtemp(prefix="fetch-session-cost-")
    try:
        port, metrics = free_port(), f"127.0.0.1:{free_port()}"
        data = os.path.join(root, "data")
        os.makedirs(data)
        broker = Broker(binary, data, port, shards,
                        [f"metrics.listener=http://{metrics}", f"max.incremental.fetch.session.cache.slots={slots}"])
        broker.start()
        try:
            bootstrap = f"127.0.0.1:{port}"
            admin = AdminClient({"bootstrap.servers": bootstrap})
            admin.create_topics([NewTopic("idle", partitions, 1)])["idle"].result(120)
            consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
            tps = [TopicPartition("idle", p) for p in range(partitions)]
            consumer.assign(tps)
            for tp in tps:
                consumer.seek(tp, 0)
            warm_until = time.monotonic() + 5
            while time.monotonic() < warm_until:
                consumer.poll(timeout_ms=100)
            before = (socket_bytes(port), scrape(metrics), cpu_seconds(broker.process.pid), time.monotonic())
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                consumer.poll(timeout_ms=100)
            after = (socket_bytes(port), scrape(metrics), cpu_seconds(broker.process.pid), time.monotonic())
            consumer.close()
        finally:
            broker.stop(signal.SIGTERM)
        fetches = after[1]['kafka_network_requestmetrics_requests_total{request="FetchConsumer"}'] - \
            before[1]['kafka_network_requestmetrics_requests_total{request="FetchConsumer"}']
        sent, received = after[0][0] - before[0][0], after[0][1] - before[0][1]
        cpu = (after[2] - before[2]) / (after[3] - before[3])
        return {
            "slots": slots,
            "fetches": fetches,
            "request_bytes": sent / fetches,
            "response_bytes": received / fetches,
            "broker_cpu": cpu,
            "sessions": after[1].get("kafka_server_fetchsessioncache_numincrementalfetchsessions", 0),
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--broker", default="target/release/broker")
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--partitions", type=int, default=3000)
    parser.add_argument("--seconds", type=float, default=20)
    args = parser.parse_args()
    print(f"| sessions | Fetch round trips in {args.seconds:g} s | request bytes / round trip | response bytes / round trip | broker CPU (share of one core) |")
    print("|---|---|---|---|---|")
    for slots in (1000, 0):
        r = measure(args.broker, args.shards, args.partitions, args.seconds, slots)
        label = f"on (slots={slots}, {r['sessions']:g} held)" if slots else "off (slots=0)"
        print(f"| {label} | {r['fetches']:g} | {r['request_bytes']:.0f} | {r['response_bytes']:.0f} | {r['broker_cpu'] * 100:.1f}% |", flush=True)


if __name__ == "__main__":
    main()
