#!/usr/bin/env python3
"""Issue 21's scale check: many partitions on one broker, through librdkafka (confluent-kafka).

    tests/clients/.venv/bin/python bench/tools/many_partitions.py \
        --broker target/release/broker --topics 100 --partitions-per-topic 100 [--shards 2]

Starts the broker binary itself in a fresh data directory, then in three rounds (first start,
after a clean restart, after kill -9 and restart): produces one record to every partition,
reads every partition back from the beginning and checks that each holds exactly the records
of the rounds so far. Prints the times, the broker's RSS and open descriptors after each round,
and exits non-zero on any lost, duplicated or unreadable record. Stops the broker it started,
whatever happens. The broker prints its descriptor budget at start (`descriptor budget`).

    ... many_partitions.py --bootstrap 127.0.0.1:19092 --pid PID [--topics ...]

points the same rounds at a broker started elsewhere (Apache Kafka by bench/kafka/kafka.sh,
whose PID is in its DIR/pids): creates the topics, runs round 1 only (the tool cannot restart
it) and reports that process's RSS and descriptors, for tuning.md's side-by-side figures.
"""
import argparse
import ctypes
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def die_with_parent():
    """The broker gets SIGKILL if this tool dies first (a test's timeout kills the tool)."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class External:
    """A broker this tool did not start: measured by PID, never stopped or restarted."""

    def __init__(self, pid):
        self.process = None
        self.pid = pid

    def rss_mib(self):
        return rss_mib(self.pid)

    def open_descriptors(self):
        return len(os.listdir(f"/proc/{self.pid}/fd"))


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class Broker:
    def __init__(self, binary, data_dir, port, shards, overrides):
        self.binary, self.data_dir, self.port, self.shards, self.overrides = binary, data_dir, port, shards, overrides
        self.process = None
        self.log = open(os.path.join(data_dir, "..", "broker.log"), "ab")

    def start(self):
        args = [self.binary, "--shards", str(self.shards),
                "--override", f"listeners=PLAINTEXT://127.0.0.1:{self.port}",
                "--override", f"log.dirs={self.data_dir}"]
        for override in self.overrides:
            args += ["--override", override]
        started = time.monotonic()
        self.process = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
        deadline = started + 300
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"broker exited with {self.process.returncode} at start")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return time.monotonic() - started
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("broker did not listen within 300 s")

    def stop(self, sig):
        started = time.monotonic()
        self.process.send_signal(sig)
        self.process.wait(timeout=300)
        stopped_s = time.monotonic() - started
        # A killed broker's listening socket outlives the process until its io_uring is torn
        # down: wait for it to go, so the next start is timed from a closed port.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                time.sleep(0.05)
            except OSError:
                break
        return stopped_s

    def rss_mib(self):
        return rss_mib(self.process.pid)

    def open_descriptors(self):
        return len(os.listdir(f"/proc/{self.process.pid}/fd"))


def produce_round(bootstrap, topics, partitions, round_no):
    errors = []
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "log_level": 3, "acks": "all",
                         "enable.idempotence": True, "queue.buffering.max.messages": 1_000_000,
                         "message.timeout.ms": 300_000})

    def delivered(err, msg):
        if err is not None:
            errors.append(f"{msg.topic()}-{msg.partition()}: {err}")

    for topic in topics:
        for partition in range(partitions):
            producer.produce(topic, value=f"{topic}-{partition}-r{round_no}".encode(), partition=partition, on_delivery=delivered)
            producer.poll(0)
    remaining = producer.flush(300)
    if remaining or errors:
        raise RuntimeError(f"produce round {round_no}: {remaining} undelivered, errors: {errors[:5]} ({len(errors)} in all)")


def consume_all(bootstrap, topics, partitions, rounds):
    """Reads every partition from the start; returns when each holds `rounds` records."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "many-partitions-check",
                         "enable.auto.commit": False, "fetch.wait.max.ms": 100,
                         "enable.partition.eof": False})
    consumer.assign([TopicPartition(t, p, 0) for t in topics for p in range(partitions)])
    expected = {(t, p): [f"{t}-{p}-r{r}" for r in range(1, rounds + 1)] for t in topics for p in range(partitions)}
    seen = {key: [] for key in expected}
    total, wanted = 0, len(expected) * rounds
    deadline = time.monotonic() + 300
    progress_at = time.monotonic() + 5
    try:
        while total < wanted and time.monotonic() < deadline:
            if time.monotonic() >= progress_at:
                progress_at += 5
                print(f"  read {total} of {wanted}", file=sys.stderr)
            for msg in consumer.consume(10_000, timeout=1.0):
                if msg.error():
                    raise RuntimeError(f"consume: {msg.error()}")
                seen[(msg.topic(), msg.partition())].append(msg.value().decode())
                total += 1
    finally:
        consumer.close()
    wrong = [(key, seen[key]) for key in expected if seen[key] != expected[key]]
    if wrong:
        raise RuntimeError(f"{len(wrong)} partitions read back wrong, e.g. {wrong[:3]}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--broker", default="target/release/broker")
    parser.add_argument("--topics", type=int, default=100)
    parser.add_argument("--partitions-per-topic", type=int, default=100)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--override", action="append", default=[])
    parser.add_argument("--work-dir", help="an empty directory for the data and the broker log (default: a new temporary one)")
    parser.add_argument("--bootstrap", help="a broker started elsewhere (e.g. Apache Kafka): round 1 only, no restarts")
    parser.add_argument("--pid", type=int, help="with --bootstrap: that broker's process, for RSS and descriptors")
    args = parser.parse_args()

    if args.bootstrap:
        if args.pid is None:
            parser.error("--bootstrap needs --pid (the broker's process, to measure)")
        work, bootstrap, broker = "(external broker)", args.bootstrap, External(args.pid)
    else:
        work = args.work_dir or tempfile.mkdtemp(prefix="many-partitions-")
        data_dir = os.path.join(work, "data")
        os.makedirs(data_dir)
        port = free_port()
        bootstrap = f"127.0.0.1:{port}"
        broker = Broker(os.path.abspath(args.broker), data_dir, port, args.shards, args.override)
    topics = [f"scale-{i:03}" for i in range(args.topics)]
    count = args.topics * args.partitions_per_topic
    rows = []
    try:
        start_s = None if args.bootstrap else broker.start()
        rows.append(("before creating", f"broker RSS {broker.rss_mib():.0f} MiB, {broker.open_descriptors()} descriptors", None))
        admin = AdminClient({"bootstrap.servers": bootstrap})
        began = time.monotonic()
        for chunk in range(0, len(topics), 10):
            futures = admin.create_topics([NewTopic(t, args.partitions_per_topic, 1) for t in topics[chunk:chunk + 10]],
                                          request_timeout=300)
            for topic, future in futures.items():
                future.result()
        create_s = time.monotonic() - began
        rows.append(("create", f"{count} partitions in {args.topics} topics", create_s))
        if start_s is not None:
            rows.append(("first start", "to listening", start_s))
        rounds = [(1, None)] if args.bootstrap else [(1, None), (2, signal.SIGTERM), (3, signal.SIGKILL)]
        for round_no, restart in rounds:
            if restart is not None:
                stop_s = broker.stop(restart)
                start_s = broker.start()
                name = "clean" if restart == signal.SIGTERM else "kill -9"
                rows.append((f"stop ({name})", "", stop_s))
                rows.append((f"start after {name}", "to listening", start_s))
            began = time.monotonic()
            produce_round(bootstrap, topics, args.partitions_per_topic, round_no)
            produce_s = time.monotonic() - began
            began = time.monotonic()
            consume_all(bootstrap, topics, args.partitions_per_topic, round_no)
            consume_s = time.monotonic() - began
            rows.append((f"round {round_no}: produce", f"1 record to each of {count} (acks=all, idempotent)", produce_s))
            rows.append((f"round {round_no}: read back", f"{count * round_no} records, every partition from 0", consume_s))
            rows.append((f"round {round_no}: after", f"broker RSS {broker.rss_mib():.0f} MiB, {broker.open_descriptors()} descriptors", None))
    finally:
        if broker.process is not None and broker.process.poll() is None:
            broker.stop(signal.SIGTERM)
    print(f"| step | what | seconds |\n|---|---|---|")
    for step, what, seconds in rows:
        print(f"| {step} | {what} | {'' if seconds is None else f'{seconds:.1f}'} |")
    print(f"all {count} partitions read back right after each round; broker log in {work}/broker.log")


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # noqa: BLE001 (the tool's one message)
        print(f"many_partitions: {e}", file=sys.stderr)
        sys.exit(1)
