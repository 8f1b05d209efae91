"""Idempotent confluent-kafka producer for the failover test: acks=all, numbered values sent
round-robin to explicit partitions at a steady rate for SECONDS, every acknowledgement recorded
with its wall-clock time. Usage: failover.py BOOTSTRAP TOPIC PARTITIONS SECONDS OUT_JSON FIRST
(environment KAFKA_CLIENT_CONFIG: a JSON object of extra settings, e.g. SASL_SSL's)"""
import json
import os
import sys
import time

from confluent_kafka import Producer

bootstrap, topic, partitions, seconds, out, first = sys.argv[1:7]
partitions, seconds, first = int(partitions), float(seconds), int(first)
acked, errors = [], []


def report(error, message):
    if error is None:
        acked.append([message.partition(), message.offset(), int(message.value()), time.time()])
    else:
        errors.append(str(error))


producer = Producer({
    "bootstrap.servers": bootstrap,
    "acks": "all",
    "enable.idempotence": True,
    "linger.ms": 5,
    "message.timeout.ms": 60000,
    # librdkafka backs off up to 1 s between metadata retries by default: cap it, so the
    # failover time measured is the cluster's, not the client's retry schedule.
    "topic.metadata.refresh.interval.ms": 500,
    "retry.backoff.ms": 50,
    "retry.backoff.max.ms": 250,
    **json.loads(os.environ.get("KAFKA_CLIENT_CONFIG") or "{}"),
})
n = first
end = time.time() + seconds
while time.time() < end:
    producer.produce(topic, value=str(n).encode(), partition=n % partitions, on_delivery=report)
    n += 1
    producer.poll(0)
    time.sleep(0.002)
unflushed = producer.flush(90)
with open(out, "w") as f:
    json.dump({"sent": n - first, "acked": acked, "errors": errors, "unflushed": unflushed}, f)
