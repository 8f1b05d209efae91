package dev.broker.it;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;

import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.CommonClientConfigs;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.acl.AccessControlEntry;
import org.apache.kafka.common.acl.AclBinding;
import org.apache.kafka.common.acl.AclOperation;
import org.apache.kafka.common.acl.AclPermissionType;
import org.apache.kafka.common.errors.GroupAuthorizationException;
import org.apache.kafka.common.errors.TopicAuthorizationException;
import org.apache.kafka.common.errors.TransactionalIdAuthorizationException;
import org.apache.kafka.common.resource.PatternType;
import org.apache.kafka.common.resource.ResourcePattern;
import org.apache.kafka.common.resource.ResourceType;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * ACL denials and grants with the Java client (issue 20), as tests/tests/acl_clients.rs does for
 * kafka-python, aiokafka and kafkajs: bob (SASL PLAIN) starts with no ACL; each refusal is the
 * Java client's own exception for Kafka's error code (Metadata hides, then Produce and Fetch
 * refuse a described topic, OffsetCommit and JoinGroup a group without READ, InitProducerId a
 * transactional id without WRITE); each grant (Admin.createAcls over PLAINTEXT as User:ANONYMOUS,
 * a super user here) lets the same calls through.
 */
@Timeout(120)
class AclDenialTest {
    private static final String JAAS = "org.apache.kafka.common.security.plain.PlainLoginModule required "
            + "username=\"admin\" password=\"admin-secret\" user_admin=\"admin-secret\" user_bob=\"bob-secret\";";

    private static Properties bob(int port) {
        Properties props = new Properties();
        props.put(CommonClientConfigs.BOOTSTRAP_SERVERS_CONFIG, "127.0.0.1:" + port);
        props.put(CommonClientConfigs.SECURITY_PROTOCOL_CONFIG, "SASL_PLAINTEXT");
        props.put("sasl.mechanism", "PLAIN");
        props.put("sasl.jaas.config", "org.apache.kafka.common.security.plain.PlainLoginModule required username=\"bob\" password=\"bob-secret\";");
        props.put(CommonClientConfigs.REQUEST_TIMEOUT_MS_CONFIG, 10_000);
        props.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, 20_000);
        return props;
    }

    private static KafkaProducer<String, String> producer(int port, String transactionalId) {
        Properties props = bob(port);
        props.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, 10_000);
        props.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, 15_000);
        props.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        props.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        if (transactionalId != null) {
            props.put(ProducerConfig.TRANSACTIONAL_ID_CONFIG, transactionalId);
        }
        return new KafkaProducer<>(props);
    }

    private static KafkaConsumer<String, String> consumer(int port, String group) {
        Properties props = bob(port);
        if (group != null) {
            props.put(ConsumerConfig.GROUP_ID_CONFIG, group);
        }
        props.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        props.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false);
        props.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        props.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        return new KafkaConsumer<>(props);
    }

    /** The cause of one send's failure, or null when it was delivered. */
    private static Throwable produce(int port, String topic) throws Exception {
        try (KafkaProducer<String, String> producer = producer(port, null)) {
            producer.send(new ProducerRecord<>(topic, "from-bob")).get(30, TimeUnit.SECONDS);
            return null;
        } catch (ExecutionException e) {
            return e.getCause();
        }
    }

    /** Polls until `count` records came; throws what the consumer throws. */
    private static int poll(KafkaConsumer<String, String> consumer, int count) {
        int seen = 0;
        long deadline = System.nanoTime() + Duration.ofSeconds(30).toNanos();
        while (seen < count && System.nanoTime() < deadline) {
            seen += consumer.poll(Duration.ofMillis(500)).count();
        }
        return seen;
    }

    private static void grant(Admin admin, ResourceType type, String name, AclOperation operation, PatternType pattern) throws Exception {
        AclBinding binding = new AclBinding(new ResourcePattern(type, name, pattern),
                new AccessControlEntry("User:bob", "*", operation, AclPermissionType.ALLOW));
        admin.createAcls(List.of(binding)).all().get(30, TimeUnit.SECONDS);
    }

    @Test
    void theJavaClientIsRefusedWithKafkasExceptionsUntilGranted() throws Exception {
        int sasl = Broker.freePort();
        try (Broker broker = Broker.start("AclDenialTest", 1,
                "listeners=PLAINTEXT://127.0.0.1:{port},SASL_PLAINTEXT://127.0.0.1:" + sasl,
                "sasl.enabled.mechanisms=PLAIN",
                "listener.name.sasl_plaintext.plain.sasl.jaas.config=" + JAAS,
                "authorizer.class.name=kafka.security.authorizer.AclAuthorizer",
                "super.users=User:ANONYMOUS",
                "transaction.state.log.num.partitions=1");
             Admin admin = Admin.create(Map.of(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, broker.bootstrap()));
             Admin bobAdmin = Admin.create(bob(sasl))) {
            admin.createTopics(List.of(new NewTopic("orders", 1, (short) 1), new NewTopic("secret", 1, (short) 1))).all().get(30, TimeUnit.SECONDS);

            // No ACL: Metadata hides both topics; the producer learns the refusal from Metadata.
            assertEquals(Set.of(), bobAdmin.listTopics().names().get(30, TimeUnit.SECONDS), broker.logTail(30));
            assertInstanceOf(TopicAuthorizationException.class, produce(sasl, "orders"));

            // DESCRIBE on orders (and WRITE on bob-*, which an idempotent producer needs for its
            // id): orders is listed, and Produce and Fetch themselves refuse it.
            grant(admin, ResourceType.TOPIC, "orders", AclOperation.DESCRIBE, PatternType.LITERAL);
            grant(admin, ResourceType.TOPIC, "bob-", AclOperation.WRITE, PatternType.PREFIXED);
            assertEquals(Set.of("orders"), bobAdmin.listTopics().names().get(30, TimeUnit.SECONDS));
            assertInstanceOf(TopicAuthorizationException.class, produce(sasl, "orders"), broker.logTail(30));
            TopicPartition orders = new TopicPartition("orders", 0);
            try (KafkaConsumer<String, String> consumer = consumer(sasl, null)) {
                consumer.assign(List.of(orders));
                assertThrows(TopicAuthorizationException.class, () -> poll(consumer, 1));
            }

            // DESCRIBE on the group: the coordinator is found; OffsetCommit and JoinGroup need READ.
            grant(admin, ResourceType.GROUP, "bob-group", AclOperation.DESCRIBE, PatternType.LITERAL);
            try (KafkaConsumer<String, String> consumer = consumer(sasl, "bob-group")) {
                consumer.assign(List.of(orders));
                assertThrows(GroupAuthorizationException.class, () -> consumer.commitSync(Map.of(orders, new OffsetAndMetadata(0))));
            }
            try (KafkaConsumer<String, String> consumer = consumer(sasl, "bob-group")) {
                consumer.subscribe(List.of("orders"));
                assertThrows(GroupAuthorizationException.class, () -> poll(consumer, 1));
            }

            // WRITE and READ on orders, READ on the group: produced, consumed and committed.
            grant(admin, ResourceType.TOPIC, "orders", AclOperation.WRITE, PatternType.LITERAL);
            grant(admin, ResourceType.TOPIC, "orders", AclOperation.READ, PatternType.LITERAL);
            grant(admin, ResourceType.GROUP, "bob-group", AclOperation.READ, PatternType.LITERAL);
            assertEquals(null, produce(sasl, "orders"), broker.logTail(30));
            try (KafkaConsumer<String, String> consumer = consumer(sasl, "bob-group")) {
                consumer.subscribe(List.of("orders"));
                assertEquals(1, poll(consumer, 1), broker.logTail(30));
                consumer.commitSync();
            }
            assertInstanceOf(TopicAuthorizationException.class, produce(sasl, "secret"));

            // Transactions: DESCRIBE on the transactional id finds its coordinator, InitProducerId
            // needs WRITE.
            grant(admin, ResourceType.TRANSACTIONAL_ID, "bob-txn", AclOperation.DESCRIBE, PatternType.LITERAL);
            try (KafkaProducer<String, String> producer = producer(sasl, "bob-txn")) {
                assertThrows(TransactionalIdAuthorizationException.class, producer::initTransactions);
            }
            grant(admin, ResourceType.TRANSACTIONAL_ID, "bob-txn", AclOperation.WRITE, PatternType.LITERAL);
            try (KafkaProducer<String, String> producer = producer(sasl, "bob-txn")) {
                producer.initTransactions();
                producer.beginTransaction();
                producer.send(new ProducerRecord<>("orders", "in-a-transaction"));
                producer.commitTransaction();
            }
        }
    }
}
