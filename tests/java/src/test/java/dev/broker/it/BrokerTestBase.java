package dev.broker.it;

import static org.junit.jupiter.api.Assertions.fail;

import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.function.BooleanSupplier;
import java.util.function.Supplier;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;
import org.apache.kafka.streams.StreamsConfig;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.TestInfo;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.extension.ExtensionContext;
import org.junit.jupiter.api.extension.TestWatcher;

/**
 * One broker per test class (started in @BeforeAll, stopped in @AfterAll, also when a test
 * fails), with client factories whose timeouts are short enough for a 2-core CI machine.
 */
@Timeout(90)
@ExtendWith(BrokerTestBase.LogOnFailure.class)
public abstract class BrokerTestBase {
    protected static Broker broker;
    protected static Admin admin;

    @BeforeAll
    static void startBroker(TestInfo info) throws Exception {
        broker = Broker.start(info.getTestClass().map(Class::getSimpleName).orElse("it"));
        admin = Admin.create(adminProps());
    }

    @AfterAll
    static void stopBroker() {
        try {
            if (admin != null) {
                admin.close(Duration.ofSeconds(5));
            }
        } finally {
            admin = null;
            if (broker != null) {
                broker.close();
                broker = null;
            }
        }
    }

    /** Prints where the broker's log is, and its tail, when a test fails. */
    static final class LogOnFailure implements TestWatcher {
        @Override
        public void testFailed(ExtensionContext context, Throwable cause) {
            if (broker != null) {
                System.err.println(context.getDisplayName() + " failed: " + cause + "\n" + broker.logTail(30));
            }
        }
    }

    protected static Properties adminProps() {
        Properties props = new Properties();
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, broker.bootstrap());
        props.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, 10_000);
        props.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, 20_000);
        return props;
    }

    protected static Properties producerProps() {
        Properties props = new Properties();
        props.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, broker.bootstrap());
        props.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        props.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        props.put(ProducerConfig.REQUEST_TIMEOUT_MS_CONFIG, 10_000);
        props.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, 20_000);
        props.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, 15_000);
        return props;
    }

    protected static Properties consumerProps(String groupId) {
        return consumerProps(broker.bootstrap(), groupId);
    }

    /** A consumer's settings for any broker (ClusterTest's cluster too). */
    static Properties consumerProps(String bootstrap, String groupId) {
        Properties props = new Properties();
        props.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        if (groupId != null) {
            props.put(ConsumerConfig.GROUP_ID_CONFIG, groupId);
        }
        props.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        props.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        props.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        props.put(ConsumerConfig.REQUEST_TIMEOUT_MS_CONFIG, 10_000);
        props.put(ConsumerConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, 20_000);
        // Members notice a rebalance at their next heartbeat: keep it short.
        props.put(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG, 500);
        props.put(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, 10_000);
        return props;
    }

    /** A Kafka Streams app's settings for this broker: one thread, replication 1, short heartbeats. */
    protected static Properties streamsProps(String applicationId, String guarantee, Path stateDir, int commitIntervalMs) {
        Properties props = new Properties();
        props.put(StreamsConfig.APPLICATION_ID_CONFIG, applicationId);
        props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, broker.bootstrap());
        props.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, guarantee);
        props.put(StreamsConfig.STATE_DIR_CONFIG, stateDir.toString());
        props.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, commitIntervalMs);
        props.put(StreamsConfig.REPLICATION_FACTOR_CONFIG, 1);
        props.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, 1);
        props.put(StreamsConfig.consumerPrefix(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG), "earliest");
        props.put(StreamsConfig.consumerPrefix(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG), 500);
        props.put(StreamsConfig.consumerPrefix(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG), 10_000);
        return props;
    }

    protected static KafkaProducer<String, String> producer(Map<String, Object> extra) {
        Properties props = producerProps();
        props.putAll(extra);
        return new KafkaProducer<>(props);
    }

    protected static KafkaConsumer<String, String> consumer(String groupId, Map<String, Object> extra) {
        Properties props = consumerProps(groupId);
        props.putAll(extra);
        return new KafkaConsumer<>(props);
    }

    protected static void createTopic(String name, int partitions) throws Exception {
        admin.createTopics(List.of(new NewTopic(name, partitions, (short) 1))).all().get();
        // Every partition has a leader in the metadata before the test produces.
        waitFor("metadata of " + name, () -> {
            try {
                return admin.describeTopics(List.of(name)).allTopicNames().get().get(name).partitions().stream()
                        .allMatch(p -> p.leader() != null && p.leader().id() >= 0);
            } catch (Exception e) {
                return false;
            }
        }, Duration.ofSeconds(15));
    }

    /** Reads every partition of `topic` from the beginning until `count` records came (or fails). */
    protected static List<ConsumerRecord<String, String>> readAll(String topic, int count, Duration timeout) {
        try (KafkaConsumer<String, String> consumer = consumer(null, Map.of())) {
            List<TopicPartition> partitions = new ArrayList<>();
            consumer.partitionsFor(topic).forEach(p -> partitions.add(new TopicPartition(topic, p.partition())));
            consumer.assign(partitions);
            consumer.seekToBeginning(partitions);
            List<ConsumerRecord<String, String>> records = new ArrayList<>();
            long deadline = System.nanoTime() + timeout.toNanos();
            while (records.size() < count && System.nanoTime() < deadline) {
                consumer.poll(Duration.ofMillis(200)).forEach(records::add);
            }
            // A little longer, to catch duplicates beyond the expected count.
            consumer.poll(Duration.ofMillis(300)).forEach(records::add);
            if (records.size() < count) {
                fail("read " + records.size() + " of " + count + " records from " + topic + " within " + timeout);
            }
            return records;
        }
    }

    protected static void waitFor(String what, BooleanSupplier condition, Duration timeout) {
        waitFor(what, condition, timeout, () -> "");
    }

    protected static void waitFor(String what, BooleanSupplier condition, Duration timeout, Supplier<String> state) {
        long deadline = System.nanoTime() + timeout.toNanos();
        while (!condition.getAsBoolean()) {
            if (System.nanoTime() > deadline) {
                fail("timed out after " + timeout + " waiting for " + what + " " + state.get());
            }
            try {
                Thread.sleep(50);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                fail("interrupted waiting for " + what);
            }
        }
    }

    protected static <T> List<T> sorted(Collection<T> items, java.util.Comparator<T> order) {
        List<T> list = new ArrayList<>(items);
        list.sort(order);
        return list;
    }
}
