#!/usr/bin/env python3
"""Round trip through a real Python Kafka client: create a topic, produce, read it all back.

Run with tests/clients/.venv/bin/python (setup.sh makes it). Exit 0 and one `roundtrip ok`
line on success; the reason on stderr and exit 1 on failure.

Consuming uses assign() and never commits: groups.py covers consumer groups.
"""
import argparse
import faulthandler
import sys
import time

TOTAL_TIMEOUT_S = 60
CONSUME_TIMEOUT_S = 30
KEYS = 17
VALUE_LEN = 100


class Failure(Exception):
    pass


def key_of(i):
    return f"key-{i % KEYS}".encode()


def value_of(i):
    return f"value-{i:06d}-".ljust(VALUE_LEN, "x").encode()


def index_of(value):
    try:
        return int(value[6:12])  # value-NNNNNN-xxx...
    except (TypeError, ValueError):
        return -1  # then value_of(-1) != value: reported as corrupt


# --- confluent-kafka (librdkafka) -------------------------------------------------

def confluent_create(args):
    from confluent_kafka.admin import AdminClient, NewTopic
    # log_level 4: librdkafka otherwise logs at info when it drops the admin's leftover events.
    admin = AdminClient({"bootstrap.servers": args.bootstrap, "log_level": 4})
    futures = admin.create_topics(
        [NewTopic(args.topic, num_partitions=args.partitions, replication_factor=1)],
        operation_timeout=10, request_timeout=15)
    futures[args.topic].result(timeout=20)  # raises KafkaException on a topic error


def confluent_produce(args):
    from confluent_kafka import Producer
    errors = []

    def on_delivery(err, msg):
        if err is not None:
            errors.append(f"partition {msg.partition()}: {err}")

    producer = Producer({
        "bootstrap.servers": args.bootstrap,
        "acks": "all",
        # librdkafka sends lz4 uncompressed to a broker that doesn't advertise FindCoordinator
        # (it dates LZ4 support by that API), so lz4 is exercised only by kafka-python for now.
        "compression.type": args.compression,
        "enable.idempotence": args.idempotent,
        "linger.ms": 5,
        "message.timeout.ms": 30000,
    })
    for i in range(args.records):
        while True:
            try:
                producer.produce(args.topic, key=key_of(i), value=value_of(i), on_delivery=on_delivery)
                break
            except BufferError:  # local queue full: let deliveries drain
                producer.poll(0.1)
        producer.poll(0)
    left = producer.flush(35)
    # librdkafka's Producer has no close(): flush() is its shutdown.
    if left:
        raise Failure(f"{left} records still undelivered after flush")
    if errors:
        raise Failure(f"{len(errors)} delivery errors, first: {errors[0]}")


def confluent_consume(args):
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
    consumer = Consumer({
        "bootstrap.servers": args.bootstrap,
        # Required by the library even for assign(); no offsets are ever committed.
        "group.id": f"roundtrip-{args.topic}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        # Watermark queries queue behind the long-polling fetch on the same connection.
        "fetch.wait.max.ms": 100,
    })
    try:
        consumer.assign([TopicPartition(args.topic, p, OFFSET_BEGINNING) for p in range(args.partitions)])
        seen = []
        deadline = time.monotonic() + CONSUME_TIMEOUT_S
        while len(seen) < args.records and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                if msg.error().fatal():
                    raise Failure(f"consumer error: {msg.error()}")
                print(f"warning: consumer error: {msg.error()}", file=sys.stderr)
                continue
            seen.append((msg.partition(), msg.offset(), msg.key(), msg.value()))
        high = sum(consumer.get_watermark_offsets(TopicPartition(args.topic, p), timeout=5)[1]
                   for p in range(args.partitions))
        return seen, high
    finally:
        consumer.close()


# --- kafka-python -----------------------------------------------------------------

def kafka_python_create(args):
    from kafka.admin import KafkaAdminClient
    admin = KafkaAdminClient(bootstrap_servers=args.bootstrap, request_timeout_ms=15000)
    try:
        admin.create_topics({args.topic: {"num_partitions": args.partitions, "replication_factor": 1}},
                            timeout_ms=10000, wait_for_metadata=True)
    finally:
        admin.close()


def kafka_python_produce(args):
    from kafka import KafkaProducer
    if "enable_idempotence" not in KafkaProducer.DEFAULT_CONFIG:
        raise Failure("this kafka-python has no enable_idempotence; setup.sh pins one that does")
    producer = KafkaProducer(
        bootstrap_servers=args.bootstrap,
        acks="all",
        compression_type=None if args.compression == "none" else args.compression,
        # Explicit both ways: kafka-python 3 turns idempotence on by default.
        enable_idempotence=args.idempotent,
        linger_ms=5,
        request_timeout_ms=15000,
        delivery_timeout_ms=30000,
    )
    try:
        futures = [producer.send(args.topic, key=key_of(i), value=value_of(i)) for i in range(args.records)]
        producer.flush(timeout=35)
        errors = []
        for f in futures:
            try:
                f.get(timeout=0)
            except Exception as e:  # any failed or still-pending send
                errors.append(f"{type(e).__name__}: {e}")
        if errors:
            raise Failure(f"{len(errors)} delivery errors, first: {errors[0]}")
    finally:
        producer.close(timeout=5)


def kafka_python_consume(args):
    from kafka import KafkaConsumer, TopicPartition
    consumer = KafkaConsumer(
        bootstrap_servers=args.bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        request_timeout_ms=15000,
    )
    try:
        partitions = [TopicPartition(args.topic, p) for p in range(args.partitions)]
        consumer.assign(partitions)
        consumer.seek_to_beginning()
        seen = []
        deadline = time.monotonic() + CONSUME_TIMEOUT_S
        while len(seen) < args.records and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                seen.extend((r.partition, r.offset, r.key, r.value) for r in records)
        high = sum(consumer.end_offsets(partitions).values())
        return seen, high
    finally:
        consumer.close()


CLIENTS = {
    "confluent": (confluent_create, confluent_produce, confluent_consume),
    "kafka-python": (kafka_python_create, kafka_python_produce, kafka_python_consume),
}


def check(args, seen, high):
    """Everything a correct broker guarantees about what one producer wrote."""
    if len(seen) != args.records:
        raise Failure(f"consumed {len(seen)} records within {CONSUME_TIMEOUT_S}s, expected {args.records}")
    seen_values = set()
    next_offset = {}
    partition_of_key = {}
    last_index_of_key = {}
    for partition, offset, key, value in seen:
        if value in seen_values:
            raise Failure(f"value {value[:13]!r} consumed twice")
        seen_values.add(value)
        i = index_of(value)
        if value != value_of(i) or key != key_of(i):
            raise Failure(f"record at {partition}/{offset} is corrupt: key={key!r} value={value!r}")
        if not 0 <= partition < args.partitions:
            raise Failure(f"record {i} on partition {partition}, topic has {args.partitions}")
        expected = next_offset.get(partition, 0)
        if offset != expected:
            raise Failure(f"partition {partition}: offset {offset} where {expected} was expected")
        next_offset[partition] = offset + 1
        if partition_of_key.setdefault(key, partition) != partition:
            raise Failure(f"key {key!r} on partitions {partition_of_key[key]} and {partition}")
        if i <= last_index_of_key.get(key, -1):
            raise Failure(f"key {key!r}: record {i} after record {last_index_of_key[key]}")
        last_index_of_key[key] = i
    missing = args.records - len(seen_values & {value_of(i) for i in range(args.records)})
    if missing:
        raise Failure(f"{missing} produced values never consumed")
    if high != args.records:
        raise Failure(f"high watermarks sum to {high}, expected {args.records}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--client", required=True, choices=CLIENTS)
    p.add_argument("--bootstrap", required=True, help="HOST:PORT")
    p.add_argument("--topic", required=True)
    p.add_argument("--partitions", type=int, required=True)
    p.add_argument("--records", type=int, required=True)
    p.add_argument("--compression", default="none", choices=["none", "gzip", "snappy", "lz4", "zstd"])
    p.add_argument("--idempotent", action="store_true")
    p.add_argument("--phase", default="all", choices=["all", "produce", "consume"])
    p.add_argument("--no-create", action="store_true", help="the topic exists already")
    args = p.parse_args()

    # Hard bound even when a client hangs inside C code: dumps stacks and exits 1.
    faulthandler.dump_traceback_later(TOTAL_TIMEOUT_S, exit=True)
    create, produce, consume = CLIENTS[args.client]
    try:
        if args.phase in ("all", "produce"):
            if not args.no_create:
                create(args)
            produce(args)
        if args.phase in ("all", "consume"):
            check(args, *consume(args))
    except Exception as e:  # client exceptions included: any of them fails the run
        reason = str(e) if isinstance(e, Failure) else f"{type(e).__name__}: {e}"
        print(f"roundtrip FAILED: client={args.client} phase={args.phase}: {reason}", file=sys.stderr)
        sys.exit(1)
    print(f"roundtrip ok: client={args.client} records={args.records} partitions={args.partitions}")


if __name__ == "__main__":
    main()
