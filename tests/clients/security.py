"""confluent-kafka over the broker's secured listeners (tests/tests/security.rs).

  security.py create-user BOOTSTRAP USER PASSWORD     SCRAM-SHA-512 user via AdminClient; prints
                                                      describe_user_scram_credentials' answer
  security.py roundtrip BOOTSTRAP PROTOCOL MECHANISM USER PASSWORD CA TOPIC COUNT
                                                      produce COUNT records, consume them back
  security.py refused BOOTSTRAP PROTOCOL MECHANISM USER PASSWORD CA
                                                      prints the authentication error the client saw
"""
import sys
import time
import uuid

from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient, ScramCredentialInfo, ScramMechanism, UserScramCredentialUpsertion


def secured(bootstrap, protocol, mechanism, user, password, ca):
    conf = {"bootstrap.servers": bootstrap, "security.protocol": protocol}
    if protocol.startswith("SASL"):
        conf.update({"sasl.mechanism": mechanism, "sasl.username": user, "sasl.password": password})
    if protocol.endswith("SSL"):
        conf["ssl.ca.location"] = ca
    return conf


def create_user(bootstrap, user, password):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    upsertion = UserScramCredentialUpsertion(user, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192), password.encode())
    for future in admin.alter_user_scram_credentials([upsertion]).values():
        future.result(timeout=30)
    for name, future in admin.describe_user_scram_credentials([user]).items():
        description = future.result(timeout=30)
        for info in description.scram_credential_infos:
            print(name, info.mechanism.name, info.iterations)


def roundtrip(bootstrap, protocol, mechanism, user, password, ca, topic, count):
    conf = secured(bootstrap, protocol, mechanism, user, password, ca)
    producer = Producer({**conf, "acks": "all"})
    delivered = []
    for i in range(count):
        producer.produce(topic, value=f"value-{i}".encode(), on_delivery=lambda err, msg: delivered.append(err))
    producer.flush(30)
    assert len(delivered) == count and all(err is None for err in delivered), delivered[:3]
    consumer = Consumer({**conf, "group.id": f"g-{uuid.uuid4()}", "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    values = []
    deadline = time.time() + 30
    while len(values) < count and time.time() < deadline:
        message = consumer.poll(1.0)
        if message is not None and message.error() is None:
            values.append(message.value().decode())
    consumer.close()
    assert values == [f"value-{i}" for i in range(count)], values[:5]
    print("consumed", len(values))


def refused(bootstrap, protocol, mechanism, user, password, ca):
    errors = []
    conf = {**secured(bootstrap, protocol, mechanism, user, password, ca), "error_cb": lambda e: errors.append(e)}
    admin = AdminClient(conf)
    try:
        admin.list_topics(timeout=5)
        print("UNEXPECTEDLY CONNECTED")
    except KafkaException as e:
        print("refused:", e)
    # The authentication error reaches error_cb through poll.
    deadline = time.time() + 10
    while not errors and time.time() < deadline:
        admin.poll(0.5)
    for error in errors:
        print(error.name(), error.str())


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    if command == "create-user":
        create_user(*args)
    elif command == "roundtrip":
        roundtrip(*args[:7], int(args[7]))
    elif command == "refused":
        refused(*args)
    else:
        sys.exit(f"unknown command {command}")
