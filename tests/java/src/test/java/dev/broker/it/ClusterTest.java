package dev.broker.it;

import static dev.broker.it.BrokerTestBase.waitFor;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.TreeMap;
import java.util.TreeSet;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReference;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Collectors;
import org.apache.kafka.clients.NetworkClient;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.ConsumerGroupDescription;
import org.apache.kafka.clients.admin.CreateTopicsResult;
import org.apache.kafka.clients.admin.DescribeClusterResult;
import org.apache.kafka.clients.admin.NewPartitions;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.ConsumerGroupState;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.TopicPartitionInfo;
import org.apache.kafka.common.errors.UnknownTopicOrPartitionException;
import org.apache.kafka.common.serialization.StringSerializer;
import org.apache.log4j.AppenderSkeleton;
import org.apache.log4j.Level;
import org.apache.log4j.Logger;
import org.apache.log4j.spi.LoggingEvent;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.MethodOrderer;
import org.junit.jupiter.api.Order;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestMethodOrder;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.extension.ExtensionContext;
import org.junit.jupiter.api.extension.TestWatcher;

/**
 * Kafka's Java client (AdminClient, idempotent producer, consumer group) against a cluster of
 * ours: one ZooKeeper (Debian's jar, a child process) and three brokers (ids 1, 2, 3) started once
 * for the class. The failover test kills a broker, so it runs last.
 */
@Timeout(60)
@TestMethodOrder(MethodOrderer.OrderAnnotation.class)
@ExtendWith(ClusterTest.LogsOnFailure.class)
class ClusterTest {
    private static final int SESSION_TIMEOUT_MS = 4_000;
    private static final List<Integer> IDS = List.of(1, 2, 3);
    private static final Duration REPLICATION = Duration.ofSeconds(20);

    private static ZooKeeper zookeeper;
    /** By broker id. */
    private static final Map<Integer, Broker> brokers = new TreeMap<>();
    private static Admin admin;

    @BeforeAll
    static void startCluster() throws Exception {
        zookeeper = ZooKeeper.start();
        for (int id : IDS) {
            brokers.put(id, Broker.start("cluster-" + id, 1,
                    "zookeeper.connect=" + zookeeper.connect("/kafka"),
                    "broker.id=" + id,
                    "zookeeper.session.timeout.ms=" + SESSION_TIMEOUT_MS));
        }
        admin = Admin.create(adminProps(bootstrap()));
        waitFor("3 brokers in the metadata", () -> {
            try {
                return admin.describeCluster().nodes().get(5, TimeUnit.SECONDS).size() == 3;
            } catch (Exception e) {
                return false;
            }
        }, Duration.ofSeconds(15));
    }

    /** Stops the brokers (in parallel, SIGTERM), then ZooKeeper, whatever failed before. */
    @AfterAll
    static void stopCluster() throws Exception {
        try {
            if (admin != null) {
                admin.close(Duration.ofSeconds(5));
            }
        } finally {
            admin = null;
            List<Throwable> failures = new ArrayList<>();
            List<Thread> stopping = new ArrayList<>();
            for (Broker broker : brokers.values()) {
                Thread thread = new Thread(() -> {
                    try {
                        broker.close();
                    } catch (Throwable e) {
                        synchronized (failures) {
                            failures.add(e);
                        }
                    }
                }, "stop-broker-" + broker.port);
                thread.start();
                stopping.add(thread);
            }
            for (Thread thread : stopping) {
                thread.join();
            }
            brokers.clear();
            if (zookeeper != null) {
                zookeeper.close();
                zookeeper = null;
            }
            if (!failures.isEmpty()) {
                IllegalStateException failure = new IllegalStateException("a broker did not stop cleanly", failures.get(0));
                failures.stream().skip(1).forEach(failure::addSuppressed);
                throw failure;
            }
        }
    }

    /** Every broker's log tail when a test fails. */
    static final class LogsOnFailure implements TestWatcher {
        @Override
        public void testFailed(ExtensionContext context, Throwable cause) {
            StringBuilder out = new StringBuilder(context.getDisplayName() + " failed: " + cause + "\n");
            brokers.forEach((id, broker) -> out.append("broker ").append(id).append(": ").append(broker.logTail(30)));
            if (zookeeper != null) {
                out.append("ZooKeeper log: ").append(zookeeper.logFile).append('\n');
            }
            System.err.println(out);
        }
    }

    // ---- clients ----

    private static String bootstrap() {
        return brokers.values().stream().map(Broker::bootstrap).collect(Collectors.joining(","));
    }

    private static Properties adminProps(String bootstrap) {
        Properties props = new Properties();
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, 5_000);
        props.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, 20_000);
        return props;
    }

    private static KafkaProducer<String, String> producer(Map<String, Object> extra) {
        Properties props = new Properties();
        props.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap());
        props.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        props.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        props.put(ProducerConfig.ACKS_CONFIG, "all");
        props.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, true);
        props.put(ProducerConfig.REQUEST_TIMEOUT_MS_CONFIG, 5_000);
        props.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, 30_000);
        props.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, 15_000);
        props.putAll(extra);
        return new KafkaProducer<>(props);
    }

    private static KafkaConsumer<String, String> consumer(String groupId, Map<String, Object> extra) {
        Properties props = BrokerTestBase.consumerProps(bootstrap(), groupId);
        props.put(ConsumerConfig.REQUEST_TIMEOUT_MS_CONFIG, 5_000);
        props.putAll(extra);
        return new KafkaConsumer<>(props);
    }

    // ---- metadata ----

    private static TopicDescription describe(String topic) throws Exception {
        return admin.describeTopics(List.of(topic)).allTopicNames().get(10, TimeUnit.SECONDS).get(topic);
    }

    private static String describeOrError(String topic) {
        try {
            return describe(topic).toString();
        } catch (Exception e) {
            return e.toString();
        }
    }

    private static List<Integer> ids(List<Node> nodes) {
        return nodes.stream().map(Node::id).collect(Collectors.toList());
    }

    /** Waits until `topic` has `partitions` partitions, each with 3 replicas, a leader and all 3 in the ISR. */
    private static TopicDescription awaitFullIsr(String topic, int partitions) {
        AtomicReference<TopicDescription> last = new AtomicReference<>();
        waitFor(topic + ": " + partitions + " partitions with 3 replicas and a full ISR", () -> {
            try {
                TopicDescription description = describe(topic);
                last.set(description);
                return description.partitions().size() == partitions && description.partitions().stream().allMatch(p ->
                        p.leader() != null && p.leader().id() >= 0 && p.replicas().size() == 3
                                && new HashSet<>(ids(p.isr())).equals(new HashSet<>(ids(p.replicas()))));
            } catch (Exception e) {
                return false;
            }
        }, REPLICATION, () -> String.valueOf(last.get()));
        return last.get();
    }

    /** The leader's id, or -1 (no leader, or the metadata request failed). */
    private static int leaderOf(String topic, int partition) {
        try {
            Node leader = describe(topic).partitions().get(partition).leader();
            return leader == null ? -1 : leader.id();
        } catch (Exception e) {
            return -1;
        }
    }

    // ---- tests ----

    @Test
    @Order(1)
    void adminSeesTheClusterAndManagesReplicatedTopics() throws Exception {
        // Every broker answers with the same three nodes (their real ports), controller and cluster id.
        Map<Integer, Integer> ports = new TreeMap<>();
        brokers.forEach((id, broker) -> ports.put(id, broker.port));
        Set<Integer> controllers = new TreeSet<>();
        Set<String> clusterIds = new TreeSet<>();
        for (Broker broker : brokers.values()) {
            try (Admin one = Admin.create(adminProps(broker.bootstrap()))) {
                DescribeClusterResult cluster = one.describeCluster();
                Map<Integer, Integer> seen = new TreeMap<>();
                for (Node node : cluster.nodes().get()) {
                    assertEquals("127.0.0.1", node.host());
                    seen.put(node.id(), node.port());
                }
                assertEquals(ports, seen, "nodes through broker on " + broker.port);
                Node controller = cluster.controller().get();
                assertNotNull(controller, "controller through broker on " + broker.port);
                controllers.add(controller.id());
                clusterIds.add(cluster.clusterId().get());
            }
        }
        assertEquals(1, controllers.size(), "every broker names the same controller: " + controllers);
        assertTrue(IDS.containsAll(controllers), controllers.toString());
        assertEquals(1, clusterIds.size(), clusterIds.toString());
        assertFalse(clusterIds.iterator().next().isEmpty());

        // Replication factor 3: three replicas and a full ISR per partition, leaders spread.
        String topic = "cluster-admin";
        CreateTopicsResult created = admin.createTopics(List.of(
                new NewTopic(topic, 3, (short) 3).configs(Map.of("min.insync.replicas", "2"))));
        created.all().get();
        assertEquals(3, created.numPartitions(topic).get());
        assertEquals(3, created.replicationFactor(topic).get());
        TopicDescription description = awaitFullIsr(topic, 3);
        Set<Integer> leaders = new TreeSet<>();
        for (TopicPartitionInfo partition : description.partitions()) {
            assertEquals(Set.copyOf(IDS), Set.copyOf(ids(partition.replicas())), partition.toString());
            leaders.add(partition.leader().id());
        }
        assertEquals(Set.copyOf(IDS), leaders, "one leader per broker: " + description);

        // A manual assignment: replicas in the given order, the first one leads.
        String assigned = "cluster-assigned";
        Map<Integer, List<Integer>> assignment = Map.of(0, List.of(1, 2, 3), 1, List.of(2, 3, 1), 2, List.of(3, 1, 2));
        admin.createTopics(List.of(new NewTopic(assigned, assignment))).all().get();
        description = awaitFullIsr(assigned, 3);
        for (TopicPartitionInfo partition : description.partitions()) {
            List<Integer> replicas = assignment.get(partition.partition());
            assertEquals(replicas, ids(partition.replicas()), partition.toString());
            assertEquals(replicas.get(0), partition.leader().id(), "the preferred replica leads: " + partition);
        }

        // CreatePartitions: 3 -> 5, the new ones replicated as well, and they take writes.
        admin.createPartitions(Map.of(topic, NewPartitions.increaseTo(5))).all().get();
        awaitFullIsr(topic, 5);
        try (KafkaProducer<String, String> producer = producer(Map.of())) {
            RecordMetadata written = producer.send(new ProducerRecord<>(topic, 4, "k", "v")).get(20, TimeUnit.SECONDS);
            assertEquals(4, written.partition());
            assertEquals(0, written.offset());
        }

        // DeleteTopics: gone from listTopics (and from describeTopics) within a bounded time.
        admin.deleteTopics(List.of(topic, assigned)).all().get();
        waitFor("deleted topics gone", () -> {
            try {
                Set<String> names = admin.listTopics().names().get(10, TimeUnit.SECONDS);
                return !names.contains(topic) && !names.contains(assigned);
            } catch (Exception e) {
                return false;
            }
        }, Duration.ofSeconds(15));
        ExecutionException gone = org.junit.jupiter.api.Assertions.assertThrows(ExecutionException.class, () -> describe(topic));
        assertInstanceOf(UnknownTopicOrPartitionException.class, gone.getCause());
    }

    @Test
    @Order(2)
    void idempotentProducerAndAGroupOfTwoConsumers() throws Exception {
        String topic = "cluster-orders";
        String group = "cluster-group";
        int partitions = 4;
        int count = 800;
        admin.createTopics(List.of(new NewTopic(topic, partitions, (short) 3)
                .configs(Map.of("min.insync.replicas", "2")))).all().get();
        awaitFullIsr(topic, partitions);

        Map<String, Object> commitOften = Map.of(ConsumerConfig.AUTO_COMMIT_INTERVAL_MS_CONFIG, 200);
        try (Member a = new Member("a", consumer(group, commitOften), List.of(topic));
             Member b = new Member("b", consumer(group, commitOften), List.of(topic))) {
            waitFor("a and b own 2 partitions each", () -> {
                Set<Integer> union = new HashSet<>(a.ownedPartitions());
                union.addAll(b.ownedPartitions());
                return a.ownedPartitions().size() == 2 && b.ownedPartitions().size() == 2 && union.size() == partitions;
            }, Duration.ofSeconds(30), () -> a + "; " + b);
            ConsumerGroupDescription stable = admin.describeConsumerGroups(List.of(group)).all().get().get(group);
            assertEquals(ConsumerGroupState.STABLE, stable.state());
            assertEquals(2, stable.members().size(), stable.toString());
            assertTrue(IDS.contains(stable.coordinator().id()), stable.toString());

            // The producer: idempotent, acks=all; every send acknowledged, offsets in send order.
            Map<Integer, List<String>> sent = new TreeMap<>();
            try (KafkaProducer<String, String> producer = producer(Map.of())) {
                List<Future<RecordMetadata>> futures = new ArrayList<>();
                for (int i = 0; i < count; i++) {
                    int partition = i % partitions;
                    String value = "order-" + i;
                    futures.add(producer.send(new ProducerRecord<>(topic, partition, "key-" + i, value)));
                    sent.computeIfAbsent(partition, p -> new ArrayList<>()).add(value);
                }
                producer.flush();
                Map<Integer, Integer> next = new HashMap<>();
                for (Future<RecordMetadata> future : futures) {
                    RecordMetadata metadata = future.get(30, TimeUnit.SECONDS);
                    int expected = next.merge(metadata.partition(), 1, Integer::sum) - 1;
                    assertEquals(expected, metadata.offset(), "offset on partition " + metadata.partition());
                }
            }

            waitFor(count + " records consumed", () -> a.records.size() + b.records.size() >= count,
                    Duration.ofSeconds(30), () -> a + "; " + b);
            Thread.sleep(500); // duplicates would show now
            Map<Integer, List<String>> consumed = new TreeMap<>();
            Map<Integer, Set<String>> readers = new TreeMap<>();
            for (Member member : List.of(a, b)) {
                for (ConsumerRecord<String, String> record : member.records) {
                    consumed.computeIfAbsent(record.partition(), p -> new ArrayList<>()).add(record.value());
                    readers.computeIfAbsent(record.partition(), p -> new TreeSet<>()).add(member.name);
                }
            }
            assertEquals(sent, consumed, "every record once, in order per partition");
            readers.forEach((partition, names) -> assertEquals(1, names.size(), "partition " + partition + " read by " + names));
            assertNull(a.failure.get());
            assertNull(b.failure.get());

            // Committed offsets (auto-commit) reach the end of every partition, as the admin sees them.
            Map<TopicPartition, OffsetAndMetadata> end = new HashMap<>();
            for (int p = 0; p < partitions; p++) {
                end.put(new TopicPartition(topic, p), new OffsetAndMetadata(count / partitions));
            }
            AtomicReference<Object> lastSeen = new AtomicReference<>();
            waitFor("committed offsets at the end of every partition", () -> {
                try {
                    Map<TopicPartition, OffsetAndMetadata> committed =
                            admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get(10, TimeUnit.SECONDS);
                    lastSeen.set(committed);
                    return offsetsOnly(committed).equals(offsetsOnly(end));
                } catch (Exception e) {
                    lastSeen.set(e);
                    return false;
                }
            }, Duration.ofSeconds(15), () -> String.valueOf(lastSeen.get()));
            Map<TopicPartition, Long> latest = new HashMap<>();
            admin.listOffsets(end.keySet().stream().collect(Collectors.toMap(tp -> tp, tp -> OffsetSpec.latest())))
                    .all().get().forEach((tp, info) -> latest.put(tp, info.offset()));
            assertEquals(offsetsOnly(end), latest, "log end offsets");
        }
        // Both members left: the group is empty and keeps its offsets.
        ConsumerGroupDescription empty = admin.describeConsumerGroups(List.of(group)).all().get().get(group);
        assertEquals(ConsumerGroupState.EMPTY, empty.state(), empty.toString());
        Map<TopicPartition, OffsetAndMetadata> committed = admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get();
        assertEquals(partitions, committed.size(), committed.toString());
        committed.values().forEach(o -> assertEquals(count / partitions, o.offset(), committed.toString()));
    }

    private static Map<TopicPartition, Long> offsetsOnly(Map<TopicPartition, OffsetAndMetadata> offsets) {
        Map<TopicPartition, Long> out = new HashMap<>();
        offsets.forEach((tp, o) -> out.put(tp, o == null ? null : o.offset()));
        return out;
    }

    /** An idempotent acks=all producer sending on its own thread every 10 ms until closed. */
    private static final class Sender implements AutoCloseable {
        final AtomicInteger sent = new AtomicInteger();
        /** value -> where it was written, for every acknowledged send. */
        final Map<String, RecordMetadata> acked = new ConcurrentHashMap<>();
        final ConcurrentLinkedQueue<String> errors = new ConcurrentLinkedQueue<>();
        final AtomicReference<Throwable> failure = new AtomicReference<>();
        private volatile boolean stopping;
        private final Thread thread;

        Sender(String topic, int partitions) {
            thread = new Thread(() -> {
                try (KafkaProducer<String, String> producer = producer(Map.of(
                        ProducerConfig.RETRIES_CONFIG, Integer.MAX_VALUE,
                        ProducerConfig.MAX_IN_FLIGHT_REQUESTS_PER_CONNECTION, 5))) {
                    while (!stopping) {
                        int i = sent.get();
                        String value = "f-" + i;
                        producer.send(new ProducerRecord<>(topic, i % partitions, "key-" + i, value), (metadata, e) -> {
                            if (e != null) {
                                errors.add(value + ": " + e);
                            } else {
                                acked.put(value, metadata);
                            }
                        });
                        sent.incrementAndGet();
                        Thread.sleep(10);
                    }
                    producer.flush();
                } catch (Throwable e) {
                    failure.set(e);
                }
            }, "failover-producer");
            thread.setDaemon(true);
            thread.start();
        }

        /** How many of the sends from the index `from` on are acknowledged. */
        long ackedFrom(int from) {
            return acked.keySet().stream().filter(v -> Integer.parseInt(v.substring(2)) >= from).count();
        }

        @Override
        public String toString() {
            return sent.get() + " sent, " + acked.size() + " acknowledged, " + errors.size() + " failed"
                    + (errors.isEmpty() ? "" : " (first: " + errors.peek() + ")")
                    + (failure.get() == null ? "" : ", producer failed: " + failure.get());
        }

        /** Stops sending, waits for the outstanding sends (flush) and closes the producer. */
        @Override
        public void close() throws InterruptedException {
            stopping = true;
            thread.join(45_000);
        }
    }

    private static final String READER_CLIENT_ID = "failover-reader";

    /**
     * The OffsetForLeaderEpoch responses the reader received, from NetworkClient's DEBUG line
     * "Received OFFSET_FOR_LEADER_EPOCH response from node N ..." (kafka-clients 3.9): the consumer
     * exposes no other trace of validating its position. While open, NetworkClient logs at DEBUG
     * into this appender only (WARN and above still reach the root logger's appenders).
     */
    private static final class EpochValidations extends AppenderSkeleton implements AutoCloseable {
        final ConcurrentLinkedQueue<String> responses = new ConcurrentLinkedQueue<>();
        private final Logger logger = Logger.getLogger(NetworkClient.class);
        private final Level level = logger.getLevel();
        private final boolean additive = logger.getAdditivity();

        EpochValidations() {
            logger.addAppender(this);
            logger.setAdditivity(false);
            logger.setLevel(Level.DEBUG);
        }

        @Override
        protected void append(LoggingEvent event) {
            if (event.getLevel().isGreaterOrEqual(Level.WARN)) {
                Logger.getRootLogger().callAppenders(event);
            }
            String message = event.getRenderedMessage();
            if (message != null && message.contains("Received OFFSET_FOR_LEADER_EPOCH response")
                    && message.contains("clientId=" + READER_CLIENT_ID + ",")) {
                responses.add(message);
            }
        }

        /** The answers for `topic`'s partition `partition` without error: their end offsets. */
        List<Long> endOffsets(String topic, int partition) {
            Pattern answer = Pattern.compile("EpochEndOffset\\(errorCode=0, partition=" + partition + ", leaderEpoch=\\d+, endOffset=(\\d+)\\)");
            List<Long> offsets = new ArrayList<>();
            for (String response : responses) {
                for (String topicResult : response.split("OffsetForLeaderTopicResult\\(")) {
                    if (topicResult.startsWith("topic='" + topic + "'")) {
                        Matcher m = answer.matcher(topicResult);
                        while (m.find()) {
                            offsets.add(Long.parseLong(m.group(1)));
                        }
                    }
                }
            }
            return offsets;
        }

        @Override
        public boolean requiresLayout() {
            return false;
        }

        @Override
        public void close() {
            logger.setLevel(level);
            logger.setAdditivity(additive);
            logger.removeAppender(this);
        }
    }

    /** A consumer without a group, assigned every partition and positioned at the start, polling on its own thread. */
    private static final class Reader implements AutoCloseable {
        final ConcurrentLinkedQueue<ConsumerRecord<String, String>> records = new ConcurrentLinkedQueue<>();
        final AtomicReference<Throwable> failure = new AtomicReference<>();
        volatile boolean positioned;
        private volatile boolean stopping;
        private final Thread thread;

        Reader(List<TopicPartition> partitions) {
            thread = new Thread(() -> {
                KafkaConsumer<String, String> consumer = consumer(null, Map.of(ConsumerConfig.CLIENT_ID_CONFIG, READER_CLIENT_ID));
                try {
                    consumer.assign(partitions);
                    consumer.seekToBeginning(partitions);
                    for (TopicPartition partition : partitions) {
                        consumer.position(partition, Duration.ofSeconds(15));
                    }
                    positioned = true;
                    while (!stopping) {
                        consumer.poll(Duration.ofMillis(100)).forEach(records::add);
                    }
                } catch (Throwable e) {
                    failure.set(e);
                } finally {
                    consumer.close(Duration.ofSeconds(5));
                }
            }, "failover-consumer");
            thread.setDaemon(true);
            thread.start();
        }

        @Override
        public String toString() {
            return records.size() + " records read" + (positioned ? "" : ", not positioned")
                    + (failure.get() == null ? "" : ", failed: " + failure.get());
        }

        @Override
        public void close() throws InterruptedException {
            stopping = true;
            thread.join(20_000);
        }
    }

    /**
     * kill -9 the leader of partition 0 while an idempotent acks=all producer keeps sending and a
     * consumer, already positioned on every partition, keeps reading: the controller elects a new
     * leader once the dead broker's ZooKeeper session expires; every send is acknowledged (the
     * producer retries), the consumer (which validates its position against the new leader with
     * OffsetForLeaderEpoch) reads every acknowledged record once, at the acknowledged offset.
     */
    @Test
    @Order(3)
    void leaderFailoverWhileProducingAndConsuming() throws Exception {
        String topic = "cluster-failover";
        int partitions = 3;
        admin.createTopics(List.of(new NewTopic(topic, partitions, (short) 3)
                .configs(Map.of("min.insync.replicas", "2")))).all().get();
        awaitFullIsr(topic, partitions);
        List<TopicPartition> all = new ArrayList<>();
        for (int p = 0; p < partitions; p++) {
            all.add(new TopicPartition(topic, p));
        }

        try (EpochValidations validations = new EpochValidations();
             Reader reader = new Reader(all);
             Sender sender = new Sender(topic, partitions)) {
            waitFor("the consumer positioned and reading", () -> reader.positioned && sender.acked.size() >= 150
                    && reader.records.size() >= 100, Duration.ofSeconds(20), () -> reader + "; " + sender);
            int victim = leaderOf(topic, 0);
            assertTrue(IDS.contains(victim), "leader of partition 0: " + describeOrError(topic));
            int epochBefore = reader.records.stream().filter(r -> r.partition() == 0)
                    .mapToInt(r -> r.leaderEpoch().orElse(-1)).max().orElse(-1);
            assertTrue(epochBefore >= 0, "records of partition 0 carry a leader epoch");

            long killedAt = System.nanoTime();
            brokers.get(victim).kill();
            AtomicInteger newLeader = new AtomicInteger(-1);
            waitFor("a new leader for partition 0 after broker " + victim + " was killed", () -> {
                int leader = leaderOf(topic, 0);
                newLeader.set(leader);
                return leader >= 0 && leader != victim;
            }, Duration.ofMillis(SESSION_TIMEOUT_MS + 15_000), () -> describeOrError(topic) + "; " + sender);
            Duration failover = Duration.ofNanos(System.nanoTime() - killedAt);
            System.out.println("broker " + victim + " killed: broker " + newLeader.get() + " leads partition 0 after "
                    + failover.toMillis() + " ms; " + sender);

            // The producer goes on: sends made after the election are acknowledged too.
            int sentAtElection = sender.sent.get();
            waitFor("60 sends after the election acknowledged", () -> sender.ackedFrom(sentAtElection) >= 60 || !sender.errors.isEmpty(),
                    Duration.ofSeconds(30), sender::toString);
            sender.close();
            assertNull(sender.failure.get(), sender.toString());
            assertTrue(sender.errors.isEmpty(), "failed sends: " + new ArrayList<>(sender.errors).subList(0, Math.min(5, sender.errors.size())));
            assertEquals(sender.sent.get(), sender.acked.size(), "every send acknowledged: " + sender);
            System.out.println("after the failover: " + sender + ", " + (System.nanoTime() - killedAt) / 1_000_000 + " ms after the kill");

            int total = sender.acked.size();
            waitFor("the consumer read every acknowledged record", () -> reader.records.size() >= total || reader.failure.get() != null,
                    Duration.ofSeconds(30), reader::toString);
            Thread.sleep(500); // duplicates would show now
            reader.close();
            assertNull(reader.failure.get(), reader.toString());

            // Each acknowledged record once, at its acknowledged offset; per partition in send order.
            Map<String, Long> readAt = new HashMap<>();
            Map<Integer, Long> lastOffset = new HashMap<>();
            Map<Integer, Integer> lastIndex = new HashMap<>();
            int epochAfter = -1;
            for (ConsumerRecord<String, String> record : reader.records) {
                Long before = readAt.put(record.value(), record.offset());
                assertNull(before, record.value() + " read twice (offsets " + before + " and " + record.offset() + ")");
                RecordMetadata ack = sender.acked.get(record.value());
                assertNotNull(ack, record.value() + " read but never acknowledged");
                assertEquals(ack.partition(), record.partition(), record.value());
                assertEquals(ack.offset(), record.offset(), record.value() + ": read at another offset than acknowledged");
                long previous = lastOffset.getOrDefault(record.partition(), -1L);
                assertEquals(previous + 1, record.offset(), "partition " + record.partition() + " read in offset order");
                lastOffset.put(record.partition(), record.offset());
                int index = Integer.parseInt(record.value().substring(2));
                assertTrue(index > lastIndex.getOrDefault(record.partition(), -1), "send order on partition " + record.partition());
                lastIndex.put(record.partition(), index);
                if (record.partition() == 0) {
                    epochAfter = Math.max(epochAfter, record.leaderEpoch().orElse(-1));
                }
            }
            assertEquals(sender.acked.keySet(), readAt.keySet(), "every acknowledged record read");
            // The consumer checked its position on partition 0 with the new leader (OffsetForLeaderEpoch),
            // and the new leader's answer cut nothing it had read.
            List<Long> validated = validations.endOffsets(topic, 0);
            assertFalse(validated.isEmpty(), "no OffsetForLeaderEpoch answer for partition 0 reached the consumer: "
                    + validations.responses);
            long readBeforeKill = reader.records.stream().filter(r -> r.partition() == 0 && r.leaderEpoch().orElse(-1) <= epochBefore)
                    .mapToLong(ConsumerRecord::offset).max().orElse(-1);
            assertTrue(validated.stream().allMatch(end -> end > readBeforeKill), "epoch end offsets " + validated
                    + " behind the last offset read under the old leader, " + readBeforeKill);
            System.out.println("the consumer validated partition 0 with OffsetForLeaderEpoch: epoch " + epochBefore
                    + " ends at " + validated + " (last offset read under it " + readBeforeKill + "); " + total + " records read once");
            assertTrue(epochAfter > epochBefore, "partition 0 records written under the new leader's epoch: "
                    + epochBefore + " before, " + epochAfter + " after");
        }
    }
}
