"""confluent-kafka against a 3-broker cluster on secured listeners (tests/tests/security_cluster.rs).
CONFIG is a JSON object of librdkafka settings (bootstrap, security protocol, SASL, CA).

  security_cluster.py scram-credential PASSWORD     Kafka's ZooKeeper form of a SCRAM-SHA-512
                                                    credential (what kafka-configs --zookeeper writes)
  security_cluster.py create-user CONFIG USER PASSWORD
  security_cluster.py wait-user CONFIG USER         until DescribeUserScramCredentials knows USER;
                                                    prints the milliseconds it took
  security_cluster.py create-topic CONFIG TOPIC PARTITIONS REPLICATION_FACTOR
  security_cluster.py transactions CONFIG TOPIC PARTITIONS
                                                    committed and aborted transactions over every
                                                    partition; read_committed sees the committed only
"""
import base64
import hashlib
import hmac
import json
import os
import sys
import time
import uuid

from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic, ScramCredentialInfo, ScramMechanism, UserScramCredentialUpsertion

TIMEOUT_S = 30


def scram_credential(password, iterations=4096):
    salt = os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha512").digest()
    stored_key = hashlib.sha512(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", "sha512").digest()
    b64 = lambda b: base64.b64encode(b).decode()
    print(f"salt={b64(salt)},stored_key={b64(stored_key)},server_key={b64(server_key)},iterations={iterations}")


def create_user(config, user, password):
    admin = AdminClient(config)
    upsertion = UserScramCredentialUpsertion(user, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192), password.encode())
    for future in admin.alter_user_scram_credentials([upsertion]).values():
        future.result(timeout=TIMEOUT_S)
    print("created", user)


def wait_user(config, user):
    admin = AdminClient(config)
    admin.list_topics(timeout=TIMEOUT_S)  # connected and authenticated before the clock starts
    started = time.time()
    while time.time() - started < TIMEOUT_S:
        try:
            for future in admin.describe_user_scram_credentials([user]).values():
                future.result(timeout=TIMEOUT_S)
            print("known after ms", int((time.time() - started) * 1000))
            return
        except KafkaException:
            time.sleep(0.02)
    sys.exit(f"{user} unknown after {TIMEOUT_S} s")


def create_topic(config, topic, partitions, replication_factor):
    admin = AdminClient(config)
    admin.create_topics([NewTopic(topic, int(partitions), int(replication_factor), config={"min.insync.replicas": "2"})])[topic].result(TIMEOUT_S)
    print("created", topic)


def transactions(config, topic, partitions):
    partitions = int(partitions)
    producer = Producer({**config, "transactional.id": f"tx-{uuid.uuid4()}", "linger.ms": 5})
    producer.init_transactions(TIMEOUT_S)
    committed = []
    for round in range(6):
        producer.begin_transaction()
        values = [f"r{round}-p{p}" for p in range(partitions)]
        for p, value in enumerate(values):
            producer.produce(topic, value=value.encode(), partition=p)
        if round % 3 == 2:
            producer.abort_transaction(TIMEOUT_S)
        else:
            producer.commit_transaction(TIMEOUT_S)
            committed.extend(values)
    consumer = Consumer({**config, "group.id": f"g-{uuid.uuid4()}", "auto.offset.reset": "earliest", "isolation.level": "read_committed"})
    consumer.subscribe([topic])
    seen = []
    deadline = time.time() + TIMEOUT_S
    while len(seen) < len(committed) and time.time() < deadline:
        message = consumer.poll(0.5)
        if message is not None and message.error() is None:
            seen.append(message.value().decode())
    # Anything aborted would arrive with the committed records that follow it: read a little more.
    end = time.time() + 2
    while time.time() < end:
        message = consumer.poll(0.2)
        if message is not None and message.error() is None:
            seen.append(message.value().decode())
    consumer.close()
    unexpected = sorted(set(seen) - set(committed))[:10]
    missing = sorted(set(committed) - set(seen))[:10]
    assert len(seen) == len(committed) and not unexpected and not missing, (len(seen), len(committed), unexpected, missing)
    print("transactions ok", len(committed), "committed records read, none aborted")


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    if command == "scram-credential":
        scram_credential(args[0])
    else:
        config = json.loads(args[0])
        {"create-user": create_user, "wait-user": wait_user, "create-topic": create_topic, "transactions": transactions}[command](config, *args[1:])
