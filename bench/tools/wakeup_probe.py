#!/usr/bin/env python3
"""Looks for lost glommio wake-ups in a running broker (shard/src/runtime.rs, "Lost wake-ups"):
one producer connection (librdkafka, acks=1, linger 0, one request in flight) sends one record at
a time, round robin over the partitions of a topic (with 2 shards, alternate partitions belong to
the other shard than the connection's, so those produces cross the shard mesh), with a random gap
of 0-2 ms between requests so the shards are sometimes busy, sometimes parking, sometimes asleep.
Prints the latency distribution and every request that took 50 ms or more, with its time.

Start the broker with BROKER_SLOW_TICKS=1 and --override log.flush.scheduler.interval.ms=600000,
so no shard timer shorter than 10 s would end a lost wake-up:

    BROKER_SLOW_TICKS=1 target/release/broker --shards 2 --override listeners=PLAINTEXT://127.0.0.1:$P \\
        --override log.dirs=$D --override log.flush.scheduler.interval.ms=600000
    SECONDS_TO_RUN=120 tests/clients/.venv/bin/python bench/tools/wakeup_probe.py 127.0.0.1:$P
"""
import os
import random
import sys
import time

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

SECONDS_TO_RUN = float(os.environ.get("SECONDS_TO_RUN", "60"))
PARTITIONS = int(os.environ.get("PARTITIONS", "8"))


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    bootstrap = sys.argv[1]
    topic = f"wakeup-probe-{os.getpid()}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, PARTITIONS, 1)]).values():
        future.result()
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, "acks": 1, "max.in.flight": 1, "enable.idempotence": False})
    # Metadata and the connection first.
    producer.produce(topic, b"warm-up", partition=0)
    producer.flush(10)
    latencies = []
    slow = []
    started = time.monotonic()
    index = 0
    while time.monotonic() - started < SECONDS_TO_RUN:
        gap = random.choice((0, 0, 0.0001, 0.0005, 0.002 * random.random()))
        if gap:
            time.sleep(gap)
        sent = time.perf_counter()
        producer.produce(topic, b"x" * 100, partition=index % PARTITIONS)
        remaining = producer.flush(30)
        took_ms = (time.perf_counter() - sent) * 1000
        if remaining:
            print(f"HANG: a produce to partition {index % PARTITIONS} not answered in 30 s at {time.monotonic() - started:.1f} s", flush=True)
        latencies.append(took_ms)
        if took_ms >= 50:
            slow.append((time.monotonic() - started, index % PARTITIONS, took_ms))
            print(f"slow: {took_ms:.1f} ms, partition {index % PARTITIONS}, at {time.monotonic() - started:.1f} s", flush=True)
        index += 1
    latencies.sort()
    at = lambda q: latencies[min(len(latencies) - 1, int(len(latencies) * q))]
    print(
        f"{len(latencies)} produces in {SECONDS_TO_RUN:.0f} s: p50 {at(0.5):.3f} p99 {at(0.99):.3f} p99.9 {at(0.999):.3f} max {latencies[-1]:.1f} ms; "
        f">= 10 ms {sum(l >= 10 for l in latencies)}, >= 50 ms {len(slow)}, >= 1 s {sum(l >= 1000 for l in latencies)}"
    )
    admin.delete_topics([topic])


if __name__ == "__main__":
    main()
