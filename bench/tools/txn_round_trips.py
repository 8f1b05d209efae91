#!/usr/bin/env python3
"""Where a transaction's time goes, seen from the client: runs N transactions of R records (1 KiB)
with confluent-kafka (librdkafka, as the bench) against each broker given, and prints the median
and p99 of the whole cycle (begin to commit returned), of commit_transaction(), and of each
request's round trip as librdkafka measures it (AddPartitionsToTxn, Produce, EndTxn: the time the
broker and the loopback take). The cycle minus the serial round trips is the client's own time.

    tests/clients/.venv/bin/python bench/tools/txn_round_trips.py ours=127.0.0.1:9092 kafka=127.0.0.1:19092

Creates a 6-partition topic per broker (txn-round-trips-<pid>); leaves it there.
"""
import logging
import os
import re
import statistics
import sys
import time

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

TRANSACTIONS = int(os.environ.get("TRANSACTIONS", "2000"))
RECORDS = int(os.environ.get("RECORDS", "100"))
RTT = re.compile(r"Received (\w+)Response \(v\d+, \d+ bytes, CorrId \d+, rtt ([\d.]+)ms\)")


class RoundTrips(logging.Handler):
    """Collects librdkafka's protocol debug lines: the round trip of every response."""

    def __init__(self):
        super().__init__()
        self.ms = {}

    def emit(self, record):
        match = RTT.search(record.getMessage())
        if match:
            self.ms.setdefault(match.group(1), []).append(float(match.group(2)))


def quantiles(values):
    values = sorted(values)
    if not values:
        return "-"
    p99 = values[min(len(values) - 1, int(len(values) * 0.99))]
    return f"p50 {statistics.median(values):.3f} p99 {p99:.3f} ms (n={len(values)})"


def measure(name, bootstrap):
    topic = f"txn-round-trips-{os.getpid()}"
    admin = AdminClient({"bootstrap.servers": bootstrap})  # kept alive until its futures are done
    for future in admin.create_topics([NewTopic(topic, 6, 1)]).values():
        future.result()
    collector = RoundTrips()
    logger = logging.getLogger(name)
    logger.addHandler(collector)
    logger.setLevel(logging.DEBUG)
    producer = Producer(
        {"bootstrap.servers": bootstrap, "transactional.id": f"{topic}-{name}", "linger.ms": 5, "debug": "protocol"},
        logger=logger,
    )
    producer.init_transactions(30)
    value = os.urandom(1024)
    cycles, commits = [], []
    # The first tenth warms up (connections, metadata, the JIT of a JVM broker): not counted.
    warm_up = TRANSACTIONS // 10
    for index in range(TRANSACTIONS + warm_up):
        if index == warm_up:
            collector.ms.clear()
        start = time.perf_counter()
        producer.begin_transaction()
        for _ in range(RECORDS):
            producer.produce(topic, value)
        commit_start = time.perf_counter()
        producer.commit_transaction(30)
        end = time.perf_counter()
        producer.poll(0)
        if index >= warm_up:
            cycles.append((end - start) * 1000)
            commits.append((end - commit_start) * 1000)
    producer.flush(10)
    print(f"{name} ({bootstrap}): {TRANSACTIONS} transactions of {RECORDS} records")
    print(f"  cycle  {quantiles(cycles)}")
    print(f"  commit {quantiles(commits)}")
    for api in ("AddPartitionsToTxn", "Produce", "EndTxn"):
        print(f"  {api:<20} round trip {quantiles(collector.ms.get(api, []))}")
    serial = sum(statistics.median(collector.ms[api]) for api in ("AddPartitionsToTxn", "Produce", "EndTxn") if collector.ms.get(api))
    print(f"  serial round trips (medians summed) {serial:.3f} ms of a {statistics.median(cycles):.3f} ms cycle")


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    for argument in sys.argv[1:]:
        name, _, bootstrap = argument.partition("=")
        measure(name, bootstrap or name)


if __name__ == "__main__":
    main()
