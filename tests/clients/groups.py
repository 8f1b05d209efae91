#!/usr/bin/env python3
"""Consumer-group scenarios through real Python Kafka clients (confluent-kafka, kafka-python).

Run with tests/clients/.venv/bin/python. Each scenario prints `<scenario> ok` and facts as
`fact name=value` lines on success; the reason on stderr and exit 1 on failure.

Scenarios (the parent starts consumers as child processes of this same script, `member`, so it
can close them, or kill -9 them, one by one):
  split     P partitions, K members in one group: every partition owned by exactly one member,
            every record consumed exactly once, min(P, K) members busy, the rest idle.
  failover  3 members; one leaves (close) or is killed (SIGKILL); the others take its
            partitions (the time is printed and bounded); nothing is skipped.
  commit    consume everything, commit half of each partition, close (before a broker restart).
  committed print the group's committed offsets.
  resume    a new consumer in the group starts exactly at the committed offsets.
  reset     a group without offsets: earliest reads everything, latest only what comes next.
  admin     ListGroups / DescribeGroups / DeleteGroups through the client's admin API, and
            OffsetDelete (refused while the group subscribes to the topic, done once Empty).
  static    a static member (group.instance.id) killed and restarted within its session gets
            its partitions back without a rebalance.
"""
import argparse
import ctypes
import faulthandler
import json
import os
import signal
import subprocess
import sys
import threading
import time

SESSION_TIMEOUT_MS = 6000
HEARTBEAT_MS = 500
KEYS = 23
PR_SET_PDEATHSIG = 1


class Failure(Exception):
    pass


def value_of(i):
    return f"record-{i:06d}".encode()


def index_of(value):
    return int(value.decode()[7:13])


# --- one client API over both libraries ------------------------------------------------------

class ConfluentConsumer:
    def __init__(self, args, group, extra=None):
        from confluent_kafka import Consumer
        config = {
            "bootstrap.servers": args.bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": SESSION_TIMEOUT_MS,
            "heartbeat.interval.ms": HEARTBEAT_MS,
            "log_level": 4,
        }
        config.update(extra or {})
        self.consumer = Consumer(config)

    def subscribe(self, topic):
        self.consumer.subscribe([topic])

    def poll(self, timeout_s):
        messages = self.consumer.consume(100, timeout_s)
        out = []
        for m in messages:
            if m.error():
                continue
            out.append((m.partition(), m.offset(), m.value()))
        return out

    def assignment(self):
        return sorted(tp.partition for tp in self.consumer.assignment())

    def commit(self, offsets=None):
        from confluent_kafka import TopicPartition
        if offsets is None:
            try:
                self.consumer.commit(asynchronous=False)
            except Exception as e:  # nothing to commit yet
                if "NO_OFFSET" not in str(e):
                    raise
            return
        self.consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()], asynchronous=False)

    def committed(self, topic, partitions):
        from confluent_kafka import TopicPartition
        result = self.consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
        return {tp.partition: tp.offset for tp in result}

    def close(self):
        self.consumer.close()


class KafkaPythonConsumer:
    def __init__(self, args, group, extra=None):
        from kafka import KafkaConsumer
        config = dict(
            bootstrap_servers=args.bootstrap,
            group_id=group,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            session_timeout_ms=SESSION_TIMEOUT_MS,
            heartbeat_interval_ms=HEARTBEAT_MS,
        )
        config.update(extra or {})
        self.consumer = KafkaConsumer(**config)

    def subscribe(self, topic):
        self.consumer.subscribe([topic])

    def poll(self, timeout_s):
        batches = self.consumer.poll(timeout_ms=int(timeout_s * 1000), max_records=100)
        out = []
        for tp, records in batches.items():
            out.extend((tp.partition, r.offset, r.value) for r in records)
        return out

    def assignment(self):
        return sorted(tp.partition for tp in self.consumer.assignment())

    def commit(self, offsets=None):
        from kafka import OffsetAndMetadata, TopicPartition
        if offsets is None:
            self.consumer.commit()
            return
        self.consumer.commit({TopicPartition(t, p): OffsetAndMetadata(o, "", -1) for (t, p), o in offsets.items()})

    def committed(self, topic, partitions):
        from kafka import TopicPartition
        return {p: self.consumer.committed(TopicPartition(topic, p)) for p in partitions}

    def close(self):
        self.consumer.close()


def consumer(args, group, extra=None):
    return (ConfluentConsumer if args.client == "confluent" else KafkaPythonConsumer)(args, group, extra)


def create_topic(args, partitions):
    if args.client == "confluent":
        from confluent_kafka.admin import AdminClient, NewTopic
        admin = AdminClient({"bootstrap.servers": args.bootstrap, "log_level": 4})
        topic = NewTopic(args.topic, num_partitions=partitions, replication_factor=args.replication_factor)
        admin.create_topics([topic])[args.topic].result(timeout=20)
    else:
        from kafka.admin import KafkaAdminClient, NewTopic
        admin = KafkaAdminClient(bootstrap_servers=args.bootstrap)
        admin.create_topics([NewTopic(args.topic, partitions, args.replication_factor)])
        admin.close()


def produce(args, start, count):
    """Records start..start+count, keyed; returns {index: partition} once all are acknowledged."""
    placed = {}
    if args.client == "confluent":
        from confluent_kafka import Producer
        errors = []
        producer = Producer({"bootstrap.servers": args.bootstrap, "linger.ms": 5, "log_level": 4})

        def delivered(err, msg):
            if err is not None:
                errors.append(str(err))
            else:
                placed[index_of(msg.value())] = msg.partition()

        for i in range(start, start + count):
            producer.produce(args.topic, key=f"k{i % KEYS}".encode(), value=value_of(i), on_delivery=delivered)
        if producer.flush(30) != 0 or errors:
            raise Failure(f"produce failed: {errors[:3]}")
    else:
        from kafka import KafkaProducer
        producer = KafkaProducer(bootstrap_servers=args.bootstrap, linger_ms=5)
        futures = [(i, producer.send(args.topic, key=f"k{i % KEYS}".encode(), value=value_of(i)))
                   for i in range(start, start + count)]
        for i, future in futures:
            placed[i] = future.get(timeout=30).partition
        producer.close()
    return placed


# --- the member child process ----------------------------------------------------------------

def run_member(args):
    """Consumes, commits after every batch, reports on stdout as JSON lines until SIGTERM."""
    # Die with the scenario process, even when it is killed: tests stop what they start.
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    extra = {}
    if args.instance:
        extra = {"group.instance.id": args.instance} if args.client == "confluent" else {"group_instance_id": args.instance}
    member = consumer(args, args.group, extra)
    member.subscribe(args.topic)

    def say(**event):
        print(json.dumps(event), flush=True)

    say(event="started", pid=os.getpid())
    last_assignment = None
    while not stop.is_set():
        records = member.poll(0.2)
        for partition, offset, value in records:
            say(event="record", partition=partition, offset=offset, index=index_of(value))
        if records:
            member.commit()
            say(event="committed")
        assignment = member.assignment()
        if assignment != last_assignment:
            last_assignment = assignment
            say(event="assigned", partitions=assignment, t=time.time())
    member.close()
    say(event="closed")


class Member:
    """A member child process and what it has reported."""

    def __init__(self, args, name, group, instance=None):
        command = [sys.executable, os.path.abspath(__file__), "member", "--client", args.client,
                   "--bootstrap", args.bootstrap, "--topic", args.topic, "--group", group]
        if instance:
            command += ["--instance", instance]
        self.name = name
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        self.lock = threading.Lock()
        self.records = []         # (partition, offset, index)
        self.assignments = []     # (time, [partitions])
        self.closed = False
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.process.stdout:
            event = json.loads(line)
            with self.lock:
                if event["event"] == "record":
                    self.records.append((event["partition"], event["offset"], event["index"]))
                elif event["event"] == "assigned":
                    self.assignments.append((event["t"], event["partitions"]))
                elif event["event"] == "closed":
                    self.closed = True

    def assignment(self):
        with self.lock:
            return self.assignments[-1][1] if self.assignments else []

    def consumed(self):
        with self.lock:
            return list(self.records)

    def leave(self):
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=30)

    def kill(self):
        self.process.kill()
        self.process.wait(timeout=10)

    def stop(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def wait_for(what, condition, timeout_s):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise Failure(f"timed out after {timeout_s}s waiting for {what}")


def all_consumed(members):
    return [r for m in members for r in m.consumed()]


def check_owned_once(members, partitions):
    owners = {}
    for m in members:
        for p in m.assignment():
            if p in owners:
                raise Failure(f"partition {p} owned by {owners[p]} and {m.name}")
            owners[p] = m.name
    if sorted(owners) != list(range(partitions)):
        raise Failure(f"partitions owned: {sorted(owners)}, expected 0..{partitions - 1}")
    return owners


# --- scenarios -------------------------------------------------------------------------------

def scenario_split(args):
    create_topic(args, args.partitions)
    total = args.partitions * 40
    placed = produce(args, 0, total)
    members = [Member(args, f"c{i + 1}", args.group) for i in range(args.members)]
    try:
        wait_for("every record", lambda: len(all_consumed(members)) >= total, 40)
        wait_for("a settled assignment", lambda: sum(len(m.assignment()) for m in members) == args.partitions, 20)
        owners = check_owned_once(members, args.partitions)
        consumed = all_consumed(members)
        indexes = sorted(r[2] for r in consumed)
        if indexes != list(range(total)):
            raise Failure(f"{len(indexes)} records consumed for {total} produced (duplicates or gaps)")
        for partition, offset, index in consumed:
            if placed[index] != partition:
                raise Failure(f"record {index} read from partition {partition}, produced to {placed[index]}")
        busy = [m for m in members if m.assignment()]
        if len(busy) != min(args.partitions, args.members):
            raise Failure(f"{len(busy)} busy members, expected {min(args.partitions, args.members)}")
        share = {len(m.assignment()) for m in busy}
        if max(share) - min(share) > 1:
            raise Failure(f"uneven assignment: {[(m.name, m.assignment()) for m in members]}")
        idle = [m.name for m in members if not m.assignment()]
        print(f"fact owners={json.dumps(owners, sort_keys=True)}")
        print(f"fact idle={','.join(idle) or '-'}")
        # Each member's assignment came from a single generation: one assignment event, no churn.
        print(f"fact assignment_events={sum(len(m.assignments) for m in members)}")
    finally:
        for m in members:
            m.stop()
    print("split ok")


def scenario_failover(args):
    partitions = 3
    create_topic(args, partitions)
    produce(args, 0, 300)
    members = [Member(args, f"c{i + 1}", args.group) for i in range(3)]
    try:
        wait_for("the first batch", lambda: len({r[2] for r in all_consumed(members)}) >= 300, 40)
        wait_for("one partition each", lambda: all(len(m.assignment()) == 1 for m in members), 20)
        victim, survivors = members[0], members[1:]
        lost = victim.assignment()[0]
        gone_at = time.time()
        if args.how == "leave":
            victim.leave()
        else:
            victim.kill()
        produce(args, 300, 300)
        wait_for(f"partition {lost} to move to a survivor",
                 lambda: any(lost in m.assignment() for m in survivors), SESSION_TIMEOUT_MS / 1000 + 15)
        takeover = min(t for m in survivors for t, ps in m.assignments if lost in ps)
        wait_for("every record of both batches",
                 lambda: len({r[2] for r in all_consumed(members)}) >= 600, 40)
        indexes = {r[2] for r in all_consumed(members)}
        missing = sorted(set(range(600)) - indexes)
        if missing:
            raise Failure(f"records never consumed: {missing[:10]}")
        wait_for("the survivors to settle", lambda: sum(len(m.assignment()) for m in survivors) == partitions, 20)
        check_owned_once(survivors, partitions)
        print(f"fact takeover_s={takeover - gone_at:.2f}")
        limit = 5 if args.how == "leave" else SESSION_TIMEOUT_MS / 1000 + 3
        if takeover - gone_at > limit:
            raise Failure(f"takeover took {takeover - gone_at:.2f}s, limit {limit}s")
        duplicates = len(all_consumed(members)) - len(indexes)
        print(f"fact duplicates={duplicates}")
    finally:
        for m in members:
            m.stop()
    print("failover ok")


def scenario_commit(args):
    create_topic(args, args.partitions)
    total = args.partitions * 50
    produce(args, 0, total)
    c = consumer(args, args.group)
    c.subscribe(args.topic)
    per_partition = {}
    deadline = time.time() + 30
    while sum(len(v) for v in per_partition.values()) < total and time.time() < deadline:
        for partition, offset, value in c.poll(0.5):
            per_partition.setdefault(partition, []).append(offset)
    if sum(len(v) for v in per_partition.values()) != total:
        raise Failure("could not consume the records to commit")
    cut = {p: len(offsets) // 2 for p, offsets in per_partition.items()}
    c.commit({(args.topic, p): o for p, o in cut.items()})
    committed = c.committed(args.topic, sorted(cut))
    if committed != cut:
        raise Failure(f"committed {committed}, expected {cut}")
    c.close()
    print(f"fact committed={json.dumps(cut, sort_keys=True)}")
    print("commit ok")


def scenario_resume(args):
    expected = {int(p): o for p, o in json.loads(args.expect).items()}
    c = consumer(args, args.group, {"auto.offset.reset": "latest"} if args.client == "confluent" else {"auto_offset_reset": "latest"})
    c.subscribe(args.topic)
    first = {}
    deadline = time.time() + 30
    while time.time() < deadline and len(first) < len(expected):
        for partition, offset, _ in c.poll(0.5):
            first.setdefault(partition, offset)
    c.close()
    for p, o in expected.items():
        if first.get(p) != o:
            raise Failure(f"partition {p}: resumed at {first.get(p)}, committed {o}")
    print(f"fact resumed={json.dumps(first, sort_keys=True)}")
    print("resume ok")


def scenario_committed(args):
    """Prints the group's committed offsets (None where there is none)."""
    c = consumer(args, args.group)
    offsets = c.committed(args.topic, list(range(args.partitions)))
    c.close()
    offsets = {p: (o if o is not None and o >= 0 else None) for p, o in offsets.items()}
    print(f"fact committed={json.dumps(offsets, sort_keys=True)}")
    print("committed ok")


def scenario_reset(args):
    create_topic(args, args.partitions)
    produce(args, 0, 40)
    earliest = consumer(args, args.group + "-earliest")
    earliest.subscribe(args.topic)
    got = []
    started = time.time()
    first_at = None
    while len(got) < 40 and time.time() - started < 30:
        records = earliest.poll(0.2)
        if records and first_at is None:
            first_at = time.time() - started
        got.extend(records)
    earliest.close()
    if sorted(index_of(v) for _, _, v in got) != list(range(40)):
        raise Failure(f"earliest: consumed {len(got)} of 40")
    print(f"fact first_record_s={first_at:.2f}")
    if first_at > 4.0:
        raise Failure(f"first record {first_at:.2f}s after subscribe (limit 4 s)")
    latest_extra = {"auto.offset.reset": "latest"} if args.client == "confluent" else {"auto_offset_reset": "latest"}
    latest = consumer(args, args.group + "-latest", latest_extra)
    latest.subscribe(args.topic)
    deadline = time.time() + 20
    while not latest.assignment() and time.time() < deadline:
        latest.poll(0.2)
    # The position is fetched after assignment: keep polling a moment so "latest" is resolved
    # before the new records arrive.
    settle = time.time() + 1.5
    while time.time() < settle:
        if latest.poll(0.2):
            raise Failure("latest: consumed a record that existed before it joined")
    produce(args, 40, 10)
    got = []
    deadline = time.time() + 20
    while len(got) < 10 and time.time() < deadline:
        got.extend(latest.poll(0.2))
    latest.close()
    if sorted(index_of(v) for _, _, v in got) != list(range(40, 50)):
        raise Failure(f"latest: consumed {sorted(index_of(v) for _, _, v in got)}, expected 40..49")
    print("reset ok")


def admin_list(args):
    if args.client == "confluent":
        from confluent_kafka.admin import AdminClient
        admin = AdminClient({"bootstrap.servers": args.bootstrap, "log_level": 4})
        result = admin.list_consumer_groups().result(timeout=20)
        return {g.group_id: g.state.name for g in result.valid}
    from kafka.admin import KafkaAdminClient
    admin = KafkaAdminClient(bootstrap_servers=args.bootstrap)
    try:
        return {g["group_id"]: g["group_state"] for g in admin.list_groups()}
    finally:
        admin.close()


def admin_describe(args, group):
    """(state, {member client id: sorted partitions})"""
    if args.client == "confluent":
        from confluent_kafka.admin import AdminClient
        admin = AdminClient({"bootstrap.servers": args.bootstrap, "log_level": 4})
        d = admin.describe_consumer_groups([group])[group].result(timeout=20)
        members = {m.member_id: sorted(tp.partition for tp in m.assignment.topic_partitions) for m in d.members}
        return d.state.name, members
    from kafka.admin import KafkaAdminClient
    admin = KafkaAdminClient(bootstrap_servers=args.bootstrap)
    try:
        d = admin.describe_groups([group])[group]
        members = {}
        for m in d["members"]:
            assignment = m["member_assignment"] or {}
            partitions = [p for a in assignment.get("assigned_partitions", []) for p in a["partitions"]]
            members[m["member_id"]] = sorted(partitions)
        return d["group_state"], members
    finally:
        admin.close()


def admin_delete(args, group):
    if args.client == "confluent":
        from confluent_kafka.admin import AdminClient
        admin = AdminClient({"bootstrap.servers": args.bootstrap, "log_level": 4})
        admin.delete_consumer_groups([group])[group].result(timeout=20)
        return
    from kafka.admin import KafkaAdminClient
    admin = KafkaAdminClient(bootstrap_servers=args.bootstrap)
    try:
        for name, outcome in admin.delete_groups([group]).items():  # {group: "OK" or an error name}
            if outcome != "OK":
                raise Failure(f"delete {name}: {outcome}")
    finally:
        admin.close()


def admin_delete_offsets(args, group):
    """OffsetDelete of partition 0's committed offset, through kafka-python's admin client (confluent's
    has no such call); returns the error name, or '' on success."""
    from kafka import TopicPartition
    from kafka.admin import KafkaAdminClient
    admin = KafkaAdminClient(bootstrap_servers=args.bootstrap)
    try:
        results = admin.delete_group_offsets(group, [TopicPartition(args.topic, 0)])
    except Exception as e:
        return type(e).__name__
    finally:
        admin.close()
    return "".join(e.__name__ for e in results.values() if e.errno != 0)


def scenario_admin(args):
    create_topic(args, args.partitions)
    produce(args, 0, 20)
    members = [Member(args, f"c{i + 1}", args.group) for i in range(2)]
    try:
        wait_for("a settled assignment", lambda: sum(len(m.assignment()) for m in members) == args.partitions, 30)
        wait_for("every record", lambda: len(all_consumed(members)) >= 20, 30)
        listed = admin_list(args)
        state = str(listed.get(args.group, "")).upper()
        if "STABLE" not in state:
            raise Failure(f"ListGroups: {listed}, expected {args.group} Stable")
        state, described = admin_describe(args, args.group)
        if "STABLE" not in str(state).upper() or len(described) != 2:
            raise Failure(f"DescribeGroups: {state} {described}")
        owned = sorted(p for ps in described.values() for p in ps)
        if owned != list(range(args.partitions)):
            raise Failure(f"DescribeGroups assignments cover {owned}")
        print(f"fact described={json.dumps(sorted(described.values()))}")
        # OffsetDelete: refused for a topic the live group subscribes to.
        error = admin_delete_offsets(args, args.group)
        if "GroupSubscribedToTopic" not in error:
            raise Failure(f"OffsetDelete on a subscribed topic: {error!r}")
    finally:
        for m in members:
            m.leave()
    state, described = admin_describe(args, args.group)
    if "EMPTY" not in str(state).upper() or described:
        raise Failure(f"after close: {state} {described}")
    if admin_delete_offsets(args, args.group):
        raise Failure("OffsetDelete on an Empty group failed")
    admin_delete(args, args.group)
    if args.group in admin_list(args):
        raise Failure("the deleted group is still listed")
    print("admin ok")


def scenario_static(args):
    create_topic(args, args.partitions)
    produce(args, 0, 40)
    a = Member(args, "a", args.group, instance="instance-a")
    b = Member(args, "b", args.group, instance="instance-b")
    try:
        wait_for("a settled assignment", lambda: len(a.assignment()) + len(b.assignment()) == args.partitions
                 and a.assignment() and b.assignment(), 30)
        before_a, b_events = a.assignment(), len(b.assignments)
        a.kill()
        a = Member(args, "a", args.group, instance="instance-a")
        wait_for("the restarted static member's assignment", lambda: a.assignment(), SESSION_TIMEOUT_MS / 1000)
        time.sleep(1.0)
        if a.assignment() != before_a:
            raise Failure(f"static member came back with {a.assignment()}, had {before_a}")
        if len(b.assignments) != b_events:
            raise Failure(f"the other member saw a rebalance: {b.assignments}")
    finally:
        a.stop()
        b.stop()
    print("static ok")


def main():
    faulthandler.dump_traceback_later(120, exit=True)
    parser = argparse.ArgumentParser()
    parser.add_argument("scenario", choices=["split", "failover", "commit", "committed", "resume", "reset", "admin", "static", "member"])
    parser.add_argument("--client", choices=["confluent", "kafka-python"], required=True)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group")
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--replication-factor", type=int, default=1, help="of the topics a scenario creates")
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--how", choices=["leave", "kill"], default="leave")
    parser.add_argument("--expect", help="resume: the committed offsets printed by commit")
    parser.add_argument("--instance")
    args = parser.parse_args()
    args.group = args.group or f"group-{args.topic}"
    try:
        {
            "split": scenario_split, "failover": scenario_failover, "commit": scenario_commit,
            "committed": scenario_committed, "resume": scenario_resume, "reset": scenario_reset, "admin": scenario_admin,
            "static": scenario_static, "member": run_member,
        }[args.scenario](args)
    except Failure as e:
        print(f"{args.scenario} failed: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
