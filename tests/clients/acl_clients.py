"""kafka-python and aiokafka against the broker's ACLs over SASL_SSL (tests/tests/acl_clients.rs).

admin (PLAIN) is a super user and grants; bob (SCRAM-SHA-512) starts with no ACL at all.

  acl_clients.py before --client kafka-python|aiokafka --bootstrap B --ca CA
      makes and fills `orders` and `secret` as admin, then walks bob from refused to granted
  acl_clients.py after --client ... (same options)
      after the broker's restart: bob still logs in and holds what he was granted, no more

Each step prints `<step>: <outcome>`, where an outcome is `ok ...` or the client's own error
class and the Kafka error name it carries (`TopicAuthorizationFailedError TOPIC_AUTHORIZATION_FAILED`).
The grants go through kafka-python's KafkaAdminClient.create_acls for both clients: aiokafka's
AIOKafkaAdminClient has no ACL calls.
"""
import argparse
import asyncio
import types

from security_clients import aiokafka_security, kafka_python_security

ADMIN = ("PLAIN", "admin", "admin-secret")
BOB = ("SCRAM-SHA-512", "bob", "bob-secret")
SEEDED = 3


def outcome(error):
    # Both clients' broker errors carry the Kafka name in `message` (a class attribute).
    name = getattr(error, "message", None)
    return f"{type(error).__name__} {name if isinstance(name, str) else error}"


class KafkaPython:
    """One method per action; each makes its own clients and closes them."""

    security = staticmethod(kafka_python_security)

    def __init__(self, args):
        self.args = args

    def options(self, who):
        """security_clients.py's options for `who` over SASL_SSL."""
        mechanism, user, password = who
        return types.SimpleNamespace(
            bootstrap=self.args.bootstrap, protocol="SASL_SSL", mechanism=mechanism, user=user, password=password,
            ca=self.args.ca, cert=None, key=None)

    def conf(self, who):
        return self.security(self.options(who))

    def create_topics(self, names):
        from kafka.admin import KafkaAdminClient, NewTopic

        admin = KafkaAdminClient(**self.conf(ADMIN))
        admin.create_topics([NewTopic(name, 1, 1) for name in names])
        admin.close()

    def topics(self, who):
        from kafka import KafkaConsumer

        consumer = KafkaConsumer(**self.conf(who))
        try:
            return sorted(t for t in consumer.topics() if not t.startswith("__"))
        finally:
            consumer.close()

    def produce(self, who, topic, count=1):
        from kafka import KafkaProducer

        producer = KafkaProducer(max_block_ms=10000, **self.conf(who))
        try:
            for i in range(count):
                producer.send(topic, f"{topic}-{i}".encode()).get(timeout=15)
            return "ok delivered"
        finally:
            producer.close(timeout=5)

    def fetch(self, who, topic):
        """Assigned, no group: ListOffsets and Fetch only."""
        from kafka import KafkaConsumer, TopicPartition

        consumer = KafkaConsumer(auto_offset_reset="earliest", **self.conf(who))
        consumer.assign([TopicPartition(topic, 0)])
        try:
            count = 0
            for _ in range(5):
                count += sum(len(r) for r in consumer.poll(1000).values())
            return f"ok fetched {count}"
        finally:
            consumer.close()

    def commit(self, who, group, topic):
        """An OffsetCommit for an assigned partition, without joining the group."""
        from kafka import KafkaConsumer, TopicPartition
        from kafka.structs import OffsetAndMetadata

        consumer = KafkaConsumer(group_id=group, enable_auto_commit=False, **self.conf(who))
        consumer.assign([TopicPartition(topic, 0)])
        try:
            consumer.commit({TopicPartition(topic, 0): OffsetAndMetadata(0, "", -1)})
            return "ok committed"
        finally:
            consumer.close(autocommit=False)

    def consume(self, who, group, topic, expected):
        """Joins the group, reads until `expected` records came, commits them."""
        from kafka import KafkaConsumer

        consumer = KafkaConsumer(topic, group_id=group, auto_offset_reset="earliest", enable_auto_commit=False, **self.conf(who))
        try:
            count = 0
            for _ in range(30):
                count += sum(len(r) for r in consumer.poll(1000).values())
                if count >= expected:
                    break
            consumer.commit()
            return f"ok consumed {count}"
        finally:
            consumer.close(autocommit=False)

    def transaction(self, who, transactional_id, topic):
        from kafka import KafkaProducer

        producer = KafkaProducer(transactional_id=transactional_id, max_block_ms=10000, **self.conf(who))
        try:
            producer.init_transactions()
            producer.begin_transaction()
            producer.send(topic, b"in-a-transaction")
            producer.commit_transaction()
            return "ok committed"
        finally:
            producer.close(timeout=5)


class AioKafka(KafkaPython):
    """aiokafka's clients, each action run to its end on a fresh event loop."""

    security = staticmethod(aiokafka_security)

    def create_topics(self, names):
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic

        async def run():
            admin = AIOKafkaAdminClient(**self.conf(ADMIN))
            await admin.start()
            try:
                await admin.create_topics([NewTopic(name, 1, 1) for name in names])
            finally:
                await admin.close()

        asyncio.run(run())

    @staticmethod
    def run(make, body):
        """Starts the client `make()` returns, runs `body(client)` within 30 s, stops it."""

        async def run():
            client = make()
            try:
                async with asyncio.timeout(30):
                    await client.start()
                    return await body(client)
            finally:
                await client.stop()

        return asyncio.run(run())

    def topics(self, who):
        from aiokafka import AIOKafkaConsumer

        async def body(consumer):
            return sorted(t for t in await consumer.topics() if not t.startswith("__"))

        return self.run(lambda: AIOKafkaConsumer(**self.conf(who)), body)

    def produce(self, who, topic, count=1):
        from aiokafka import AIOKafkaProducer

        async def body(producer):
            for i in range(count):
                await producer.send_and_wait(topic, f"{topic}-{i}".encode())
            return "ok delivered"

        return self.run(lambda: AIOKafkaProducer(request_timeout_ms=10000, **self.conf(who)), body)

    def fetch(self, who, topic):
        from aiokafka import AIOKafkaConsumer, TopicPartition

        async def body(consumer):
            consumer.assign([TopicPartition(topic, 0)])
            records = await consumer.getmany(timeout_ms=5000)
            return f"ok fetched {sum(len(r) for r in records.values())}"

        return self.run(lambda: AIOKafkaConsumer(auto_offset_reset="earliest", **self.conf(who)), body)

    def commit(self, who, group, topic):
        from aiokafka import AIOKafkaConsumer, TopicPartition

        async def body(consumer):
            consumer.assign([TopicPartition(topic, 0)])
            await consumer.commit({TopicPartition(topic, 0): 0})
            return "ok committed"

        return self.run(lambda: AIOKafkaConsumer(group_id=group, enable_auto_commit=False, **self.conf(who)), body)

    def consume(self, who, group, topic, expected):
        from aiokafka import AIOKafkaConsumer

        async def body(consumer):
            consumer.subscribe([topic])
            count = 0
            for _ in range(20):
                count += sum(len(r) for r in (await consumer.getmany(timeout_ms=1000)).values())
                if count >= expected:
                    break
            await consumer.commit()
            return f"ok consumed {count}"

        make = lambda: AIOKafkaConsumer(group_id=group, auto_offset_reset="earliest", enable_auto_commit=False, **self.conf(who))
        return self.run(make, body)

    def transaction(self, who, transactional_id, topic):
        from aiokafka import AIOKafkaProducer

        async def body(producer):
            async with producer.transaction():
                await producer.send(topic, b"in-a-transaction")
            return "ok committed"

        return self.run(lambda: AIOKafkaProducer(transactional_id=transactional_id, **self.conf(who)), body)


def grant(client, resource_type, name, operation, pattern="LITERAL"):
    from kafka.admin import ACL, ACLOperation, ACLPermissionType, ACLResourcePatternType, KafkaAdminClient, ResourcePattern, ResourceType

    admin = KafkaAdminClient(**kafka_python_security(client.options(ADMIN)))
    try:
        pattern = ResourcePattern(ResourceType[resource_type], name, ACLResourcePatternType[pattern])
        result = admin.create_acls([ACL("User:bob", "*", ACLOperation[operation], ACLPermissionType.ALLOW, pattern)])
        assert not result["failed"], result
    finally:
        admin.close()


def step(name, action, *args):
    try:
        result = action(*args)
    except Exception as e:  # the class is what the test checks
        result = outcome(e)
    print(f"{name}: {' '.join(result) if isinstance(result, list) else result}", flush=True)


def before(client):
    client.create_topics(["orders", "secret"])
    client.produce(ADMIN, "orders", SEEDED)
    client.produce(ADMIN, "secret", SEEDED)
    # No ACL: Metadata hides both topics, so the producer learns the refusal from Metadata.
    step("topics-none", client.topics, BOB)
    step("produce-unknown", client.produce, BOB, "orders")
    # DESCRIBE on orders shows it; WRITE on bob-* lets an idempotent producer get its id (Kafka's
    # InitProducerId rule: IDEMPOTENT_WRITE on the cluster or WRITE on some topic). Produce
    # and Fetch themselves now refuse orders.
    grant(client, "TOPIC", "orders", "DESCRIBE")
    grant(client, "TOPIC", "bob-", "WRITE", "PREFIXED")
    step("topics-describe", client.topics, BOB)
    step("produce-denied", client.produce, BOB, "orders")
    step("fetch-denied", client.fetch, BOB, "orders")
    # No ACL on the group: FindCoordinator refuses it. DESCRIBE on it: the coordinator is found,
    # and OffsetCommit (without joining) and JoinGroup refuse (both need READ).
    step("commit-group-unknown", client.commit, BOB, "bob-group", "orders")
    step("join-group-unknown", client.consume, BOB, "bob-group", "orders", 1)
    grant(client, "GROUP", "bob-group", "DESCRIBE")
    step("commit-group-denied", client.commit, BOB, "bob-group", "orders")
    step("join-group-denied", client.consume, BOB, "bob-group", "orders", 1)
    # READ on the group: it joins, and Fetch refuses the topic.
    grant(client, "GROUP", "bob-group", "READ")
    step("group-fetch-denied", client.consume, BOB, "bob-group", "orders", 1)
    # READ and WRITE on orders: produced and consumed; secret still refused.
    grant(client, "TOPIC", "orders", "WRITE")
    grant(client, "TOPIC", "orders", "READ")
    step("produce-granted", client.produce, BOB, "orders")
    step("consume-granted", client.consume, BOB, "bob-group", "orders", SEEDED + 1)
    step("produce-secret", client.produce, BOB, "secret")
    # Transactions: no ACL on the transactional id (FindCoordinator refuses it), DESCRIBE only
    # (InitProducerId needs WRITE), then WRITE.
    step("transaction-unknown", client.transaction, BOB, "bob-txn", "orders")
    grant(client, "TRANSACTIONAL_ID", "bob-txn", "DESCRIBE")
    step("transaction-denied", client.transaction, BOB, "bob-txn", "orders")
    grant(client, "TRANSACTIONAL_ID", "bob-txn", "WRITE")
    step("transaction-granted", client.transaction, BOB, "bob-txn", "orders")


def after(client):
    # bob's SCRAM credentials and his ACLs came back from the data directory.
    step("topics-after-restart", client.topics, BOB)
    step("produce-after-restart", client.produce, BOB, "orders")
    step("fetch-after-restart", client.fetch, BOB, "orders")
    step("produce-secret-after-restart", client.produce, BOB, "secret")
    step("transaction-after-restart", client.transaction, BOB, "bob-txn", "orders")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("phase", choices=["before", "after"])
    parser.add_argument("--client", choices=["kafka-python", "aiokafka"], required=True)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--ca", required=True)
    args = parser.parse_args()
    client = KafkaPython(args) if args.client == "kafka-python" else AioKafka(args)
    {"before": before, "after": after}[args.phase](client)


if __name__ == "__main__":
    main()
