"""confluent-kafka against the broker's ACLs (tests/tests/acl.rs).

The admin connects over PLAINTEXT (User:ANONYMOUS, a super user in these tests); alice and bob
over SASL_PLAINTEXT with PLAIN.

  acl.py create ADMIN TYPE NAME PATTERN PRINCIPAL OPERATION PERMISSION   one ACL (host *)
  acl.py describe ADMIN                                                  every ACL, one line each
  acl.py delete ADMIN TYPE NAME PATTERN                                  deletes matching ACLs, prints them
  acl.py produce SASL USER PASSWORD TOPIC                                one record: "delivered" or the error name
  acl.py consume SASL USER PASSWORD TOPIC GROUP                          "consumed N" or the first error name
  acl.py topics SASL USER PASSWORD                                       the topics Metadata shows
  acl.py grant-live SASL ADMIN TOPIC                                     alice is refused, the admin grants, the same producer succeeds
  acl.py operations SASL USER PASSWORD TOPIC GROUP                       KIP-430 operations of the cluster, topic and group
"""
import sys
import time
import uuid

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)


def sasl(bootstrap, user, password):
    return {
        "bootstrap.servers": bootstrap,
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "PLAIN",
        "sasl.username": user,
        "sasl.password": password,
    }


def binding(kind, name, pattern, principal, operation, permission):
    return AclBinding(
        ResourceType[kind], name, ResourcePatternType[pattern], principal, "*", AclOperation[operation], AclPermissionType[permission]
    )


def create(admin, *args):
    client = AdminClient({"bootstrap.servers": admin})  # kept: its futures die with it
    for future in client.create_acls([binding(*args)]).values():
        future.result(timeout=30)
    print("created")


def show(b):
    return f"{b.restype.name} {b.name} {b.resource_pattern_type.name} {b.principal} {b.host} {b.operation.name} {b.permission_type.name}"


def describe(admin):
    everything = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None, AclOperation.ANY, AclPermissionType.ANY)
    client = AdminClient({"bootstrap.servers": admin})
    for b in sorted(client.describe_acls(everything).result(timeout=30), key=show):
        print(show(b))


def delete(admin, kind, name, pattern):
    f = AclBindingFilter(ResourceType[kind], name, ResourcePatternType[pattern], None, None, AclOperation.ANY, AclPermissionType.ANY)
    client = AdminClient({"bootstrap.servers": admin})
    for future in client.delete_acls([f]).values():
        for b in future.result(timeout=30):
            print("deleted", show(b))


def produce_one(producer, topic):
    results = []
    producer.produce(topic, value=b"v", on_delivery=lambda err, msg: results.append(err))
    producer.flush(30)
    if not results:
        return "no delivery report"
    return "delivered" if results[0] is None else results[0].name()


def produce(bootstrap, user, password, topic):
    print(produce_one(Producer({**sasl(bootstrap, user, password), "message.timeout.ms": 10000}), topic))


def consume(bootstrap, user, password, topic, group):
    consumer = Consumer({**sasl(bootstrap, user, password), "group.id": group, "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    count = 0
    deadline = time.time() + 20
    while time.time() < deadline:
        message = consumer.poll(0.5)
        if message is None:
            if count:
                break
            continue
        if message.error() is not None:
            if message.error().code() == KafkaError._PARTITION_EOF:
                continue
            print("error", message.error().name())
            consumer.close()
            return
        count += 1
    consumer.close()
    print("consumed", count)


def topics(bootstrap, user, password):
    client = AdminClient(sasl(bootstrap, user, password))
    metadata = client.list_topics(timeout=20)
    print(" ".join(sorted(t for t in metadata.topics if not t.startswith("__"))))


def grant_live(bootstrap, admin, topic):
    # One producer, one connection: librdkafka remembers the refusal from its last metadata
    # (produce() raises at once) until its next refresh, every second here.
    producer = Producer({**sasl(bootstrap, "alice", "alice-secret"), "message.timeout.ms": 10000, "topic.metadata.refresh.interval.ms": 1000})
    print("before", produce_one(producer, topic))
    create(admin, "TOPIC", topic, "LITERAL", "User:alice", "WRITE", "ALLOW")
    deadline = time.time() + 15
    while True:
        try:
            print("after", produce_one(producer, topic))
            return
        except KafkaException as e:
            if time.time() > deadline:
                raise
            time.sleep(0.5)


def operations(bootstrap, user, password, topic, group):
    admin = AdminClient(sasl(bootstrap, user, password))
    cluster = admin.describe_cluster(include_authorized_operations=True).result(timeout=30)
    print("cluster", sorted(op.name for op in cluster.authorized_operations or []))
    from confluent_kafka import TopicCollection

    for name, future in admin.describe_topics(TopicCollection([topic]), include_authorized_operations=True).items():
        description = future.result(timeout=30)
        print("topic", sorted(op.name for op in description.authorized_operations or []))
    for name, future in admin.describe_consumer_groups([group], include_authorized_operations=True).items():
        description = future.result(timeout=30)
        print("group", sorted(op.name for op in description.authorized_operations or []))


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    {
        "create": create,
        "describe": describe,
        "delete": delete,
        "produce": produce,
        "consume": consume,
        "topics": topics,
        "grant-live": grant_live,
        "operations": operations,
    }[command](*args)
