"""Transactions against the broker with confluent-kafka (librdkafka): scenarios run by
tests/tests/transactions.rs. Each prints `fact name=value` lines and `<scenario> ok`.

  basic:    init_transactions, a committed and an aborted transaction, a read_uncommitted
            consumer sees both (the markers are skipped by the client);
  fencing:  a second producer with the same transactional.id fences the first, both when the
            first is idle and when it has a transaction open (that one is aborted);
  offsets:  consume-transform-produce: send_offsets_to_transaction commits the group's offsets
            with the transaction (visible after commit, not after abort);
  timeout:  a transaction left open past transaction.timeout.ms is aborted by the coordinator and
            its producer fenced;
  lso:      an open transaction holds read_committed consumers at the last stable offset, plain
            records produced after it too, until its commit releases them (the long poll wakes);
            ListOffsets latest per isolation level (librdkafka asks with the consumer's);
  leave_open / after_restart: a committed, an aborted and an open transaction, then (after the
            broker's kill -9 and restart) read_committed still filters the aborted records and is
            not held for ever by the open one (the coordinator aborts it on timeout).
  stream:   (cluster mode, run by Rust, which kill -9s the coordinator twice mid-stream) a stream of
            transactions over all partitions, every 3rd aborted on purpose, recovering from errors
            as librdkafka's docs say; then read_committed from the start: every transaction seen
            committed exactly once, nothing of an aborted one, and no partition's LSO left
            behind its high watermark.
  many:     (cluster mode) --producers transactional producers in threads, --count transactions
            in all, each one record to every partition and committed; then read_committed reads
            them all. The Rust side counts the connections between the brokers meanwhile.
Every scenario that reads also reads read_committed: aborted records never reach it.
"""
import argparse
import os
import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

TIMEOUT_S = 30


def producer(bootstrap, transactional_id, **extra):
    config = {'bootstrap.servers': bootstrap, 'transactional.id': transactional_id, 'linger.ms': 5}
    config.update(extra)
    return Producer(config)


REPLICATION_FACTOR = 1


def create_topic(bootstrap, topic, partitions):
    admin = AdminClient({'bootstrap.servers': bootstrap})
    admin.create_topics([NewTopic(topic, partitions, REPLICATION_FACTOR)])[topic].result()


def read_all(bootstrap, topic, partitions, expected, isolation='read_uncommitted'):
    consumer = Consumer({'bootstrap.servers': bootstrap, 'group.id': f'reader-{topic}-{time.time()}',
                         'isolation.level': isolation, 'enable.auto.commit': False})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    values = []
    deadline = time.time() + TIMEOUT_S
    while len(values) < expected and time.time() < deadline:
        message = consumer.poll(0.5)
        if message is None or message.error():
            continue
        values.append(message.value().decode())
    # A little longer: nothing more may come.
    end = time.time() + 1.0
    while time.time() < end:
        message = consumer.poll(0.2)
        if message is not None and not message.error():
            values.append(message.value().decode())
    consumer.close()
    return values


def fenced(error):
    return error.args[0].fatal() or 'FENCED' in error.args[0].name() or 'EPOCH' in error.args[0].name()


def basic(args):
    create_topic(args.bootstrap, args.topic, 2)
    p = producer(args.bootstrap, f'{args.topic}-txn')
    p.init_transactions(TIMEOUT_S)
    p.begin_transaction()
    for i in range(10):
        p.produce(args.topic, value=f'commit-{i}', partition=i % 2)
    p.commit_transaction(TIMEOUT_S)
    p.begin_transaction()
    for i in range(6):
        p.produce(args.topic, value=f'abort-{i}', partition=i % 2)
    p.flush(TIMEOUT_S)
    p.abort_transaction(TIMEOUT_S)
    # A second committed transaction right after the abort (the abort's markers are done).
    p.begin_transaction()
    p.produce(args.topic, value='commit-again', partition=0)
    p.commit_transaction(TIMEOUT_S)
    values = read_all(args.bootstrap, args.topic, 2, 17)
    print(f'fact committed={sum(v.startswith("commit") for v in values)}')
    print(f'fact aborted={sum(v.startswith("abort") for v in values)}')
    print(f'fact total={len(values)}')
    values = read_all(args.bootstrap, args.topic, 2, 11, 'read_committed')
    print(f'fact rc_committed={sum(v.startswith("commit") for v in values)}')
    print(f'fact rc_aborted={sum(v.startswith("abort") for v in values)}')
    # A second client's read_committed (kafka-python filters by the aborted transactions list too).
    values = read_all_kafka_python(args.bootstrap, args.topic, 2, 11)
    print(f'fact kp_rc_committed={sum(v.startswith("commit") for v in values)}')
    print(f'fact kp_rc_aborted={sum(v.startswith("abort") for v in values)}')


def read_all_kafka_python(bootstrap, topic, partitions, expected):
    import kafka
    consumer = kafka.KafkaConsumer(bootstrap_servers=bootstrap, isolation_level='read_committed', enable_auto_commit=False,
                                   auto_offset_reset='earliest', consumer_timeout_ms=2000)
    consumer.assign([kafka.TopicPartition(topic, p) for p in range(partitions)])
    values = []
    deadline = time.time() + TIMEOUT_S
    while len(values) <= expected and time.time() < deadline:
        batch = consumer.poll(timeout_ms=500)
        values.extend(m.value.decode() for records in batch.values() for m in records)
        if len(values) >= expected:
            values.extend(m.value.decode() for records in consumer.poll(timeout_ms=1000).values() for m in records)
            break
    consumer.close()
    return values


def fencing(args):
    create_topic(args.bootstrap, args.topic, 1)
    transactional_id = f'{args.topic}-txn'
    first = producer(args.bootstrap, transactional_id)
    first.init_transactions(TIMEOUT_S)
    first.begin_transaction()
    first.produce(args.topic, value='first-committed', partition=0)
    first.commit_transaction(TIMEOUT_S)
    # An idle producer fenced: its next transaction fails.
    second = producer(args.bootstrap, transactional_id)
    second.init_transactions(TIMEOUT_S)
    try:
        first.begin_transaction()
        first.produce(args.topic, value='zombie', partition=0)
        first.commit_transaction(TIMEOUT_S)
        print('fact idle_fenced=no')
    except KafkaException as e:
        print(f'fact idle_fenced={"yes" if fenced(e) else e}')
    # A producer with an open transaction fenced: the transaction is aborted.
    second.begin_transaction()
    second.produce(args.topic, value='second-open', partition=0)
    second.flush(TIMEOUT_S)
    third = producer(args.bootstrap, transactional_id)
    started = time.time()
    third.init_transactions(TIMEOUT_S)
    print(f'fact fence_ms={int((time.time() - started) * 1000)}')
    try:
        second.commit_transaction(TIMEOUT_S)
        print('fact open_fenced=no')
    except KafkaException as e:
        print(f'fact open_fenced={"yes" if fenced(e) else e}')
    third.begin_transaction()
    third.produce(args.topic, value='third-committed', partition=0)
    third.commit_transaction(TIMEOUT_S)
    values = read_all(args.bootstrap, args.topic, 1, 3)
    print(f'fact values={",".join(sorted(values))}')


def offsets(args):
    create_topic(args.bootstrap, args.topic, 1)
    out_topic = f'{args.topic}-out'
    create_topic(args.bootstrap, out_topic, 1)
    seed = Producer({'bootstrap.servers': args.bootstrap})
    for i in range(10):
        seed.produce(args.topic, value=f'in-{i}', partition=0)
    seed.flush(TIMEOUT_S)
    group = f'{args.topic}-group'

    def consumer():
        c = Consumer({'bootstrap.servers': args.bootstrap, 'group.id': group, 'enable.auto.commit': False,
                      'auto.offset.reset': 'earliest', 'isolation.level': 'read_uncommitted'})
        c.assign([TopicPartition(args.topic, 0)])
        return c

    def committed(expected=None):
        # The markers follow EndTxn's answer: wait (bounded) for the expected offset to show.
        c = Consumer({'bootstrap.servers': args.bootstrap, 'group.id': group})
        deadline = time.time() + 10
        while True:
            offset = c.committed([TopicPartition(args.topic, 0)], TIMEOUT_S)[0].offset
            if expected is None or offset == expected or time.time() > deadline:
                break
            time.sleep(0.1)
        c.close()
        return offset

    p = producer(args.bootstrap, f'{args.topic}-txn')
    p.init_transactions(TIMEOUT_S)
    c = consumer()
    taken = []
    deadline = time.time() + TIMEOUT_S
    while len(taken) < 4 and time.time() < deadline:
        message = c.poll(0.5)
        if message is not None and not message.error():
            taken.append(message)
    # Transform and commit the first four with their offsets.
    p.begin_transaction()
    for message in taken:
        p.produce(out_topic, value=message.value().decode().replace('in', 'out'), partition=0)
    p.send_offsets_to_transaction([TopicPartition(args.topic, 0, taken[-1].offset() + 1)], c.consumer_group_metadata(), TIMEOUT_S)
    p.commit_transaction(TIMEOUT_S)
    print(f'fact after_commit={committed(4)}')
    # An aborted transaction's offsets never become visible.
    p.begin_transaction()
    p.produce(out_topic, value='out-aborted', partition=0)
    p.send_offsets_to_transaction([TopicPartition(args.topic, 0, 9)], c.consumer_group_metadata(), TIMEOUT_S)
    p.abort_transaction(TIMEOUT_S)
    time.sleep(1)
    print(f'fact after_abort={committed()}')
    c.close()


def timeout(args):
    create_topic(args.bootstrap, args.topic, 1)
    p = producer(args.bootstrap, f'{args.topic}-txn', **{'transaction.timeout.ms': 2000})
    p.init_transactions(TIMEOUT_S)
    p.begin_transaction()
    p.produce(args.topic, value='abandoned', partition=0)
    p.flush(TIMEOUT_S)
    time.sleep(4)
    try:
        p.commit_transaction(TIMEOUT_S)
        print('fact timed_out=no')
    except KafkaException as e:
        print(f'fact timed_out={"yes" if fenced(e) or e.args[0].txn_requires_abort() else e}')
    # A new producer with the id starts cleanly.
    q = producer(args.bootstrap, f'{args.topic}-txn')
    q.init_transactions(TIMEOUT_S)
    q.begin_transaction()
    q.produce(args.topic, value='after', partition=0)
    q.commit_transaction(TIMEOUT_S)
    values = read_all(args.bootstrap, args.topic, 1, 2)
    print(f'fact values={",".join(sorted(values))}')


def latest(bootstrap, topic, isolation, partition=0):
    c = Consumer({'bootstrap.servers': bootstrap, 'group.id': f'latest-{time.time()}', 'isolation.level': isolation})
    _, high = c.get_watermark_offsets(TopicPartition(topic, partition), TIMEOUT_S, cached=False)
    c.close()
    return high


def poll_values(consumer, values, seconds, until=None):
    end = time.time() + seconds
    while time.time() < end and (until is None or len(values) < until):
        message = consumer.poll(0.2)
        if message is not None and not message.error():
            values.append(message.value().decode())


def lso(args):
    create_topic(args.bootstrap, args.topic, 1)
    plain = Producer({'bootstrap.servers': args.bootstrap, 'linger.ms': 5})
    plain.produce(args.topic, value='plain-before', partition=0)
    plain.flush(TIMEOUT_S)
    p = producer(args.bootstrap, f'{args.topic}-txn')
    p.init_transactions(TIMEOUT_S)
    p.begin_transaction()
    p.produce(args.topic, value='txn-0', partition=0)
    p.flush(TIMEOUT_S)
    plain.produce(args.topic, value='plain-after', partition=0)
    plain.flush(TIMEOUT_S)
    print(f'fact open_latest_committed={latest(args.bootstrap, args.topic, "read_committed")}')
    print(f'fact open_latest_uncommitted={latest(args.bootstrap, args.topic, "read_uncommitted")}')
    rc = Consumer({'bootstrap.servers': args.bootstrap, 'group.id': f'rc-{args.topic}', 'isolation.level': 'read_committed',
                   'enable.auto.commit': False, 'fetch.wait.max.ms': 5000})
    rc.assign([TopicPartition(args.topic, 0, 0)])
    held = []
    poll_values(rc, held, 3)
    print(f'fact held={",".join(held)}')
    ru_values = read_all(args.bootstrap, args.topic, 1, 3)
    print(f'fact uncommitted_while_open={",".join(ru_values)}')
    committed_at = time.time()
    p.commit_transaction(TIMEOUT_S)
    released = list(held)
    poll_values(rc, released, TIMEOUT_S, until=3)
    print(f'fact release_ms={int((time.time() - committed_at) * 1000)}')
    print(f'fact released={",".join(released)}')
    rc.close()
    print(f'fact latest_committed={latest(args.bootstrap, args.topic, "read_committed")}')
    print(f'fact latest_uncommitted={latest(args.bootstrap, args.topic, "read_uncommitted")}')


def leave_open(args):
    create_topic(args.bootstrap, args.topic, 1)
    p = producer(args.bootstrap, f'{args.topic}-txn', **{'transaction.timeout.ms': 3000})
    p.init_transactions(TIMEOUT_S)
    p.begin_transaction()
    p.produce(args.topic, value='committed-0', partition=0)
    p.commit_transaction(TIMEOUT_S)
    p.begin_transaction()
    for i in range(3):
        p.produce(args.topic, value=f'aborted-{i}', partition=0)
    p.flush(TIMEOUT_S)
    p.abort_transaction(TIMEOUT_S)
    p.begin_transaction()
    p.produce(args.topic, value='open-0', partition=0)
    p.flush(TIMEOUT_S)
    print('leave_open ok', flush=True)
    # Gone without ending the transaction (no close: librdkafka would not abort it either).
    os._exit(0)


def after_restart(args):
    q = producer(args.bootstrap, f'{args.topic}-txn2')
    q.init_transactions(TIMEOUT_S)
    q.begin_transaction()
    q.produce(args.topic, value='after-0', partition=0)
    q.commit_transaction(TIMEOUT_S)
    started = time.time()
    values = read_all(args.bootstrap, args.topic, 1, 2, 'read_committed')
    print(f'fact unstuck_ms={int((time.time() - started) * 1000)}')
    print(f'fact rc_values={",".join(sorted(values))}')
    values = read_all(args.bootstrap, args.topic, 1, 6)
    print(f'fact ru_values={",".join(sorted(values))}')


def reinit(args):
    # Its own topic (made beforehand in cluster mode, replicated; auto-created standalone): the
    # first one's partitions may have been on a broker that is gone now, and an admin request
    # would wait for a controller, which the killed broker may have been.
    p = producer(args.bootstrap, f'{args.topic}-txn')
    p.init_transactions(TIMEOUT_S)
    p.begin_transaction()
    p.produce(f'{args.topic}-re', value='reinit', partition=0)
    p.commit_transaction(TIMEOUT_S)


STREAM_TRANSACTIONS = 15
STREAM_RECORDS = 10
STREAM_KILLED_IN = 4
STREAM_KILLED_COMMITTING = 9
# Well over a failover (ZooKeeper session 3 s, then the client finds the new coordinator) on a
# busy machine: a kill must not make the coordinator abort the transaction on timeout.
STREAM_TIMEOUT_MS = 20000


def wait_for_file(path):
    deadline = time.time() + 60
    while not os.path.exists(path):
        assert time.time() < deadline, f'{path} never came'
        time.sleep(0.05)


def end_transaction(p, commit):
    """Commits (or aborts) as librdkafka's docs say: retry a retriable error, abort on an abortable
    one. Returns 'committed', 'aborted' or 'unknown' (a fatal error: the coordinator may or may not
    have written the outcome, so only all-or-nothing can be asked of it)."""
    deadline = time.time() + 60
    while True:
        try:
            if commit:
                p.commit_transaction(TIMEOUT_S)
                return 'committed'
            p.abort_transaction(TIMEOUT_S)
            return 'aborted'
        except KafkaException as e:
            error = e.args[0]
            print(f'fact error={"commit" if commit else "abort"}:{error.name()}:retriable={error.retriable()}'
                  f':abortable={error.txn_requires_abort()}:fatal={error.fatal()}', flush=True)
            if error.fatal() or time.time() > deadline:
                return 'unknown'
            if error.txn_requires_abort():
                commit = False
            # Retriable (or abortable, now aborting): call again, it resumes where it stopped.


def stream(args):
    """The topic exists (made by Rust with RF 3). After init_transactions it waits for args.go to
    exist (Rust waits for full ISRs), then prints `progress N` after each transaction; in
    transaction STREAM_KILLED_IN it waits for args.go + '.killed' between its records and its
    commit (Rust kills the coordinator meanwhile); in STREAM_KILLED_COMMITTING for
    args.go + '.rejoined' before its commit, which Rust races with a kill."""
    partitions = args.partitions
    p = producer(args.bootstrap, f'{args.topic}-txn', **{'transaction.timeout.ms': STREAM_TIMEOUT_MS})
    p.init_transactions(TIMEOUT_S)
    print('fact ready', flush=True)
    wait_for_file(args.go)
    outcomes = {}
    for txn in range(STREAM_TRANSACTIONS):
        commit = txn % 3 != 2
        if txn == STREAM_KILLED_COMMITTING:
            # Between transactions (a pause inside one would outlast its timeout): Rust restarts
            # the broker killed before and waits for full ISRs; then it kills the coordinator as
            # soon as it reads `committing`, which this transaction prints just before its commit.
            print('fact before-commit', flush=True)
            wait_for_file(args.go + '.rejoined')
        try:
            p.begin_transaction()
            for i in range(STREAM_RECORDS):
                p.produce(args.topic, value=f't{txn}-r{i}', partition=(txn + i) % partitions)
            p.flush(TIMEOUT_S)
            if txn == STREAM_KILLED_IN:
                # Records written, EndTxn not sent yet: Rust kills the coordinator now.
                print('fact mid-transaction', flush=True)
                wait_for_file(args.go + '.killed')
            if txn == STREAM_KILLED_COMMITTING:
                print('fact committing', flush=True)
        except KafkaException as e:
            print(f'fact error=produce:{e.args[0].name()}', flush=True)
            if e.args[0].fatal():
                outcomes[txn] = 'unknown'
                break
            commit = False
        outcomes[txn] = end_transaction(p, commit)
        print(f'progress {txn} {outcomes[txn]}', flush=True)
        if outcomes[txn] == 'unknown':
            # Fatal: the only way on is a new producer (same id: it fences and aborts the old).
            p = producer(args.bootstrap, f'{args.topic}-txn', **{'transaction.timeout.ms': STREAM_TIMEOUT_MS})
            p.init_transactions(TIMEOUT_S)
    kept = {t for t, o in outcomes.items() if o == 'committed'}
    print(f'fact committed={len(kept)} aborted={sum(o == "aborted" for o in outcomes.values())} '
          f'unknown={sum(o == "unknown" for o in outcomes.values())}', flush=True)

    # No LSO left hanging: read_committed's latest reaches read_uncommitted's on every partition
    # (within the transaction timeout, in case the coordinator has one to abort).
    settling = time.time()
    deadline = settling + STREAM_TIMEOUT_MS / 1000 + 5
    for partition in range(partitions):
        while True:
            rc, ru = (latest(args.bootstrap, args.topic, i, partition) for i in ('read_committed', 'read_uncommitted'))
            if rc == ru:
                break
            assert time.time() < deadline, f'partition {partition}: LSO {rc} stuck below {ru}'
            time.sleep(0.2)
    print(f'fact lso_settled_ms={int((time.time() - settling) * 1000)}')

    expected = len(kept) * STREAM_RECORDS
    values = read_all(args.bootstrap, args.topic, partitions, expected, 'read_committed')
    counts = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    duplicates = sorted(v for v, n in counts.items() if n > 1)
    assert not duplicates, f'read more than once: {duplicates}'
    seen = {}
    for value in counts:
        txn = int(value[1:value.index('-')])
        seen[txn] = seen.get(txn, 0) + 1
    for txn, outcome in outcomes.items():
        records = seen.get(txn, 0)
        if outcome == 'committed':
            assert records == STREAM_RECORDS, f'committed transaction {txn}: {records} records read'
        elif outcome == 'aborted':
            assert records == 0, f'aborted transaction {txn}: {records} records read'
        else:
            assert records in (0, STREAM_RECORDS), f'transaction {txn} of unknown outcome half there: {records}'
    strays = sorted(set(seen) - set(outcomes))
    assert not strays, f'records of transactions never run: {strays}'
    print(f'fact read={len(values)}')


def many(args):
    import threading
    create_topic(args.bootstrap, args.topic, args.partitions)
    errors = []

    def run(index, count):
        try:
            p = producer(args.bootstrap, f'{args.topic}-txn-{index}')
            p.init_transactions(TIMEOUT_S)
            for i in range(count):
                p.begin_transaction()
                for partition in range(args.partitions):
                    p.produce(args.topic, value=f'{index}-{i}', partition=partition)
                p.commit_transaction(TIMEOUT_S)
        except Exception as e:  # reported by the main thread
            errors.append(f'producer {index}: {e!r}')

    per_producer = args.count // args.producers
    threads = [threading.Thread(target=run, args=(i, per_producer)) for i in range(args.producers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    committed = per_producer * args.producers
    print(f'fact committed={committed}', flush=True)
    values = read_all(args.bootstrap, args.topic, args.partitions, committed * args.partitions, 'read_committed')
    print(f'fact rc_read={len(values)}')


def invalid_timeout(args):
    p = producer(args.bootstrap, f'{args.topic}-txn', **{'transaction.timeout.ms': 3_600_000})
    try:
        p.init_transactions(10)
        print('fact refused=no')
    except KafkaException as e:
        print(f'fact refused={e.args[0].name()}')


if __name__ == '__main__':
    parser = argparse.ArgumentParser()
    parser.add_argument('scenario')
    parser.add_argument('--bootstrap', required=True)
    parser.add_argument('--topic', required=True)
    parser.add_argument('--replication-factor', type=int, default=1)
    parser.add_argument('--partitions', type=int, default=6)
    parser.add_argument('--count', type=int, default=200, help='many: transactions in all')
    parser.add_argument('--producers', type=int, default=4, help='many: producers at once')
    parser.add_argument('--go', help='stream: a file whose existence starts the stream')
    args = parser.parse_args()
    REPLICATION_FACTOR = args.replication_factor
    globals()[args.scenario](args)
    print(f'{args.scenario} ok')
