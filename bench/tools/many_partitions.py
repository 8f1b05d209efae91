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
it) and reports that process's RSS and descriptors.

    ... many_partitions.py --kafka-dir /tmp/scale-kafka [--kafka-heap 2G] [--cpus 0]

runs all three rounds on Apache Kafka 3.9 (ZooKeeper mode) started, stopped and restarted
through bench/kafka/kafka.sh (restarts with --keep-data; after kill -9, ZooKeeper is restarted
too and kafka.sh waits out the killed broker's session before launching it, a wait not counted
in the start time). --cpus CPUS pins the broker (ours: `--cpus CPUS` and taskset; Kafka: its JVM
and ZooKeeper) to CPUS; pin this tool elsewhere (`taskset -c 1`) for a same-pinning comparison.
Each restart's row "restart until every partition served" is the start (launch to listening,
or for Kafka to its "started" line) plus the round's produce and read-back: a partition served
once it took a write and gave it back. The data directories are deleted at the end (logs stay).
"""
import argparse
import ctypes
import os
import re
import shutil
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


class MeasuredByPid:
    """RSS and descriptors of the broker's process, `self.pid`."""

    def rss_mib(self):
        return rss_mib(self.pid)

    def open_descriptors(self):
        return len(os.listdir(f"/proc/{self.pid}/fd"))


class External(MeasuredByPid):
    """A broker this tool did not start: measured by PID, never stopped or restarted."""

    def __init__(self, pid):
        self.process = None
        self.pid = pid

    def shutdown(self):
        pass


class KafkaSh(MeasuredByPid):
    """Apache Kafka and its ZooKeeper through bench/kafka/kafka.sh, one broker."""

    def __init__(self, kafka_dir, port, cpus, heap):
        self.script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "kafka", "kafka.sh")
        self.dir, self.port, self.cpus, self.heap = kafka_dir, port, cpus, heap
        self.pid = None
        self.started_once = False

    def kafka_sh(self, *args):
        env = dict(os.environ, KAFKA_START_TIMEOUT="600")
        done = subprocess.run([self.script, *args], capture_output=True, text=True, env=env, timeout=900)
        if done.returncode != 0:
            raise RuntimeError(f"kafka.sh {args[0]} failed:\n{done.stdout}{done.stderr}")
        return done.stdout

    def start(self):
        args = ["start", "--port", str(self.port), "--dir", self.dir, "--heap", self.heap]
        args += ["--cpus", self.cpus] if self.cpus else []
        args += ["--keep-data"] if self.started_once else []
        out = self.kafka_sh(*args)
        self.started_once = True
        for line in out.splitlines():
            if line.startswith("waited "):
                print(f"  kafka.sh: {line}", file=sys.stderr)
        with open(os.path.join(self.dir, "pids")) as pids:
            self.pid = next(int(line.split()[1]) for line in pids if line.startswith("broker-0 "))
        ready = re.search(r"broker-0 .*: ready ([0-9.]+) s after launch", out)
        if ready is None:
            raise RuntimeError(f"kafka.sh start said no ready time:\n{out}")
        return float(ready.group(1))

    def stop(self, sig):
        """Signals the broker and times its exit; then stops ZooKeeper (kafka.sh stop)."""
        started = time.monotonic()
        os.kill(self.pid, sig)
        deadline = started + 300
        while os.path.exists(f"/proc/{self.pid}") and time.monotonic() < deadline:
            time.sleep(0.05)
        stopped_s = time.monotonic() - started
        self.kafka_sh("stop", "--dir", self.dir)
        self.pid = None
        return stopped_s

    def shutdown(self):
        if os.path.exists(os.path.join(self.dir, "pids")):
            self.kafka_sh("stop", "--dir", self.dir)
        # The data (ZooKeeper's and the broker's); the logs stay.
        shutil.rmtree(os.path.join(self.dir, "zookeeper", "data"), ignore_errors=True)
        shutil.rmtree(os.path.join(self.dir, "broker-0", "logs"), ignore_errors=True)


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class Broker(MeasuredByPid):
    def __init__(self, binary, data_dir, port, shards, cpus, overrides):
        self.binary, self.data_dir, self.port, self.shards, self.cpus, self.overrides = binary, data_dir, port, shards, cpus, overrides
        self.process = None
        self.log = open(os.path.join(data_dir, "..", "broker.log"), "ab")

    def start(self):
        placement = ["taskset", "-c", self.cpus, self.binary, "--cpus", self.cpus] if self.cpus else [self.binary, "--shards", str(self.shards)]
        args = [*placement,
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

    @property
    def pid(self):
        return self.process.pid

    def shutdown(self):
        if self.process is not None and self.process.poll() is None:
            self.stop(signal.SIGTERM)
        # The data; the broker log beside it stays.
        shutil.rmtree(self.data_dir, ignore_errors=True)


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
    parser.add_argument("--cpus", help="pin the broker to these CPUs (ours: --cpus, one shard per CPU; Kafka: taskset)")
    parser.add_argument("--override", action="append", default=[])
    parser.add_argument("--work-dir", help="an empty directory for the data and the broker log (default: a new temporary one)")
    parser.add_argument("--bootstrap", help="a broker started elsewhere (e.g. Apache Kafka): round 1 only, no restarts")
    parser.add_argument("--pid", type=int, help="with --bootstrap: that broker's process, for RSS and descriptors")
    parser.add_argument("--kafka-dir", help="run the three rounds on Apache Kafka through bench/kafka/kafka.sh, in this directory")
    parser.add_argument("--kafka-heap", default="2G")
    args = parser.parse_args()

    if args.bootstrap:
        if args.pid is None:
            parser.error("--bootstrap needs --pid (the broker's process, to measure)")
        work, bootstrap, broker = "(external broker)", args.bootstrap, External(args.pid)
    elif args.kafka_dir:
        work, port = args.kafka_dir, free_port()
        bootstrap, broker = f"127.0.0.1:{port}", KafkaSh(os.path.abspath(args.kafka_dir), port, args.cpus, args.kafka_heap)
    else:
        work = args.work_dir or tempfile.mkdtemp(prefix="many-partitions-")
        data_dir = os.path.join(work, "data")
        os.makedirs(data_dir)
        port = free_port()
        bootstrap = f"127.0.0.1:{port}"
        broker = Broker(os.path.abspath(args.broker), data_dir, port, args.shards, args.cpus, args.override)
    topics = [f"scale-{i:03}" for i in range(args.topics)]
    count = args.topics * args.partitions_per_topic
    rows = []
    start_what = "to listening" if args.kafka_dir is None else "JVM launch to 'started' logged"

    def row(step, what, seconds):
        """Kept for the table and said at once: a run of many minutes shows its progress."""
        rows.append((step, what, seconds))
        print(f"  {step}: {what}" + ("" if seconds is None else f" {seconds:.1f} s"), file=sys.stderr)

    try:
        start_s = None if args.bootstrap else broker.start()
        row("before creating", f"broker RSS {broker.rss_mib():.0f} MiB, {broker.open_descriptors()} descriptors", None)
        admin = AdminClient({"bootstrap.servers": bootstrap})
        began = time.monotonic()
        for chunk in range(0, len(topics), 10):
            futures = admin.create_topics([NewTopic(t, args.partitions_per_topic, 1) for t in topics[chunk:chunk + 10]],
                                          request_timeout=300)
            for topic, future in futures.items():
                future.result()
        create_s = time.monotonic() - began
        row("create", f"{count} partitions in {args.topics} topics", create_s)
        if start_s is not None:
            row("first start", start_what, start_s)
        rounds = [(1, None)] if args.bootstrap else [(1, None), (2, signal.SIGTERM), (3, signal.SIGKILL)]
        for round_no, restart in rounds:
            if restart is not None:
                stop_s = broker.stop(restart)
                start_s = broker.start()
                name = "clean" if restart == signal.SIGTERM else "kill -9"
                row(f"stop ({name})", "", stop_s)
                row(f"start after {name}", start_what, start_s)
            began = time.monotonic()
            produce_round(bootstrap, topics, args.partitions_per_topic, round_no)
            produce_s = time.monotonic() - began
            began = time.monotonic()
            consume_all(bootstrap, topics, args.partitions_per_topic, round_no)
            consume_s = time.monotonic() - began
            row(f"round {round_no}: produce", f"1 record to each of {count} (acks=all, idempotent)", produce_s)
            row(f"round {round_no}: read back", f"{count * round_no} records, every partition from 0", consume_s)
            if restart is not None:
                row(f"restart after {name} until every partition served", "start + produce + read back", start_s + produce_s + consume_s)
            row(f"round {round_no}: after", f"broker RSS {broker.rss_mib():.0f} MiB, {broker.open_descriptors()} descriptors", None)
    finally:
        broker.shutdown()
    print(f"| step | what | seconds |\n|---|---|---|")
    for step, what, seconds in rows:
        print(f"| {step} | {what} | {'' if seconds is None else f'{seconds:.1f}'} |")
    print(f"all {count} partitions read back right after each round; broker log in {work}")


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # noqa: BLE001 (the tool's one message)
        print(f"many_partitions: {e}", file=sys.stderr)
        sys.exit(1)
