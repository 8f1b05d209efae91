package dev.broker.it;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.time.Duration;
import java.util.Collection;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.ExecutionException;
import java.util.stream.Collectors;
import org.apache.kafka.clients.admin.AlterConfigOp;
import org.apache.kafka.clients.admin.Config;
import org.apache.kafka.clients.admin.ConfigEntry;
import org.apache.kafka.clients.admin.ConsumerGroupDescription;
import org.apache.kafka.clients.admin.ConsumerGroupListing;
import org.apache.kafka.clients.admin.CreateTopicsOptions;
import org.apache.kafka.clients.admin.CreateTopicsResult;
import org.apache.kafka.clients.admin.DescribeClusterResult;
import org.apache.kafka.clients.admin.ListOffsetsResult.ListOffsetsResultInfo;
import org.apache.kafka.clients.admin.ListTopicsOptions;
import org.apache.kafka.clients.admin.NewPartitions;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.ConsumerGroupState;
import org.apache.kafka.common.GroupType;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.TopicPartitionInfo;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.errors.GroupIdNotFoundException;
import org.apache.kafka.common.errors.GroupNotEmptyException;
import org.apache.kafka.common.errors.InvalidConfigurationException;
import org.apache.kafka.common.errors.InvalidPartitionsException;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.errors.UnknownTopicOrPartitionException;
import org.junit.jupiter.api.Test;

/** Kafka's AdminClient: topics, partitions, configs, offsets, groups, cluster. */
class AdminClientTest extends BrokerTestBase {

    private static TopicDescription describe(String topic) throws Exception {
        return admin.describeTopics(List.of(topic)).allTopicNames().get().get(topic);
    }

    private static Config topicConfig(String topic) throws Exception {
        ConfigResource resource = new ConfigResource(ConfigResource.Type.TOPIC, topic);
        return admin.describeConfigs(List.of(resource)).all().get().get(resource);
    }

    private static Throwable cause(ExecutionException e) {
        return e.getCause();
    }

    private static void waitForTopics(String what, java.util.function.Predicate<Set<String>> condition) {
        waitFor(what, () -> {
            try {
                return condition.test(admin.listTopics().names().get());
            } catch (Exception e) {
                return false;
            }
        }, Duration.ofSeconds(15));
    }

    @Test
    void describeCluster() throws Exception {
        DescribeClusterResult cluster = admin.describeCluster();
        Collection<Node> nodes = cluster.nodes().get();
        assertEquals(1, nodes.size(), nodes.toString());
        Node node = nodes.iterator().next();
        assertEquals("127.0.0.1", node.host());
        assertEquals(broker.port, node.port());
        Node controller = cluster.controller().get();
        assertNotNull(controller);
        assertEquals(node.id(), controller.id());
        String clusterId = cluster.clusterId().get();
        assertNotNull(clusterId);
        assertFalse(clusterId.isEmpty());
        // DescribeCluster (API 60): without an authorizer, as Kafka, every cluster operation.
        var operations = admin.describeCluster(new org.apache.kafka.clients.admin.DescribeClusterOptions()
                .includeAuthorizedOperations(true)).authorizedOperations().get();
        assertEquals(Set.of(org.apache.kafka.common.acl.AclOperation.CREATE, org.apache.kafka.common.acl.AclOperation.ALTER,
                org.apache.kafka.common.acl.AclOperation.DESCRIBE, org.apache.kafka.common.acl.AclOperation.CLUSTER_ACTION,
                org.apache.kafka.common.acl.AclOperation.DESCRIBE_CONFIGS, org.apache.kafka.common.acl.AclOperation.ALTER_CONFIGS,
                org.apache.kafka.common.acl.AclOperation.IDEMPOTENT_WRITE), operations);
        assertEquals(null, admin.describeCluster().authorizedOperations().get());
    }

    @Test
    void createDescribeListAndDeleteTopics() throws Exception {
        int nodeId = admin.describeCluster().nodes().get().iterator().next().id();
        NewTopic topic = new NewTopic("admin-topic", 3, (short) 1)
                .configs(Map.of("retention.ms", "3600000", "segment.bytes", "1048576"));
        // validateOnly creates nothing.
        admin.createTopics(List.of(topic), new CreateTopicsOptions().validateOnly(true)).all().get();
        assertFalse(admin.listTopics().names().get().contains("admin-topic"));

        CreateTopicsResult created = admin.createTopics(List.of(topic));
        created.all().get();
        assertEquals(3, created.numPartitions("admin-topic").get());
        assertEquals(1, created.replicationFactor("admin-topic").get());
        assertEquals("3600000", created.config("admin-topic").get().get("retention.ms").value());
        assertNotNull(created.topicId("admin-topic").get());

        TopicDescription description = describe("admin-topic");
        assertFalse(description.isInternal());
        assertEquals(3, description.partitions().size());
        for (TopicPartitionInfo partition : description.partitions()) {
            assertEquals(nodeId, partition.leader().id());
            assertEquals(List.of(nodeId), partition.replicas().stream().map(Node::id).collect(Collectors.toList()));
            assertEquals(List.of(nodeId), partition.isr().stream().map(Node::id).collect(Collectors.toList()));
        }
        assertNotNull(description.topicId());

        ExecutionException again = assertThrows(ExecutionException.class, () -> admin.createTopics(List.of(topic)).all().get());
        assertInstanceOf(TopicExistsException.class, cause(again));
        ExecutionException badConfig = assertThrows(ExecutionException.class, () -> admin.createTopics(
                List.of(new NewTopic("admin-bad", 1, (short) 1).configs(Map.of("retention.ms", "soon")))).all().get());
        assertInstanceOf(InvalidConfigurationException.class, cause(badConfig));

        assertTrue(admin.listTopics().names().get().contains("admin-topic"));
        // Internal topics only with listInternal (once a group used __consumer_offsets).
        assertFalse(admin.listTopics().names().get().contains("__consumer_offsets"));

        admin.deleteTopics(List.of("admin-topic")).all().get();
        waitForTopics("admin-topic deleted", names -> !names.contains("admin-topic"));
        ExecutionException gone = assertThrows(ExecutionException.class, () -> describe("admin-topic"));
        assertInstanceOf(UnknownTopicOrPartitionException.class, cause(gone));
        ExecutionException deleteAgain = assertThrows(ExecutionException.class,
                () -> admin.deleteTopics(List.of("admin-topic")).all().get());
        assertInstanceOf(UnknownTopicOrPartitionException.class, cause(deleteAgain));
    }

    @Test
    void createTopicsAnswersTheTopicId() throws Exception {
        CreateTopicsResult created = admin.createTopics(List.of(new NewTopic("admin-topic-id", 1, (short) 1)));
        created.all().get();
        assertEquals(describe("admin-topic-id").topicId(), created.topicId("admin-topic-id").get());
    }

    @Test
    void describeTopicsByTopicId() throws Exception {
        createTopic("admin-by-id", 2);
        org.apache.kafka.common.Uuid id = describe("admin-by-id").topicId();
        TopicDescription byId = admin.describeTopics(org.apache.kafka.common.TopicCollection.ofTopicIds(List.of(id)))
                .allTopicIds().get().get(id);
        assertEquals("admin-by-id", byId.name());
        assertEquals(2, byId.partitions().size());
    }

    @Test
    void describeLogDirs() throws Exception {
        createTopic("admin-log-dirs", 1);
        try (KafkaProducer<String, String> producer = producer(Map.of())) {
            producer.send(new ProducerRecord<>("admin-log-dirs", "k", "v")).get();
        }
        int nodeId = admin.describeCluster().nodes().get().iterator().next().id();
        var dirs = admin.describeLogDirs(List.of(nodeId)).allDescriptions().get().get(nodeId);
        assertEquals(1, dirs.size(), dirs.toString());
        var replicas = dirs.values().iterator().next().replicaInfos();
        var replica = replicas.get(new TopicPartition("admin-log-dirs", 0));
        assertNotNull(replica, replicas.toString());
        assertTrue(replica.size() > 0, replica.toString());
        // v4: the file system's total and usable bytes.
        var dir = dirs.values().iterator().next();
        assertTrue(dir.totalBytes().isPresent() && dir.usableBytes().isPresent(), dir.toString());
        assertTrue(dir.usableBytes().getAsLong() <= dir.totalBytes().getAsLong(), dir.toString());
    }

    @Test
    void createPartitions() throws Exception {
        createTopic("admin-grow", 2);
        admin.createPartitions(Map.of("admin-grow", NewPartitions.increaseTo(5))).all().get();
        waitFor("5 partitions", () -> {
            try {
                return describe("admin-grow").partitions().size() == 5;
            } catch (Exception e) {
                return false;
            }
        }, Duration.ofSeconds(15));
        // The new partitions take writes.
        try (KafkaProducer<String, String> producer = producer(Map.of())) {
            assertEquals(4, producer.send(new ProducerRecord<>("admin-grow", 4, "k", "v")).get().partition());
        }
        ExecutionException shrink = assertThrows(ExecutionException.class,
                () -> admin.createPartitions(Map.of("admin-grow", NewPartitions.increaseTo(3))).all().get());
        assertInstanceOf(InvalidPartitionsException.class, cause(shrink));
    }

    @Test
    void createTopicWithManualReplicaAssignment() throws Exception {
        int nodeId = admin.describeCluster().nodes().get().iterator().next().id();
        Map<Integer, List<Integer>> assignment = Map.of(0, List.of(nodeId), 1, List.of(nodeId));
        admin.createTopics(List.of(new NewTopic("admin-assigned", assignment))).all().get();
        TopicDescription description = describe("admin-assigned");
        assertEquals(2, description.partitions().size());
        assertEquals(nodeId, description.partitions().get(1).leader().id());
    }

    @Test
    void describeAlterAndIncrementalAlterConfigs() throws Exception {
        String topic = "admin-configs";
        admin.createTopics(List.of(new NewTopic(topic, 1, (short) 1)
                .configs(Map.of("retention.ms", "3600000", "segment.bytes", "1048576")))).all().get();

        Config config = topicConfig(topic);
        ConfigEntry retention = config.get("retention.ms");
        assertEquals("3600000", retention.value());
        assertEquals(ConfigEntry.ConfigSource.DYNAMIC_TOPIC_CONFIG, retention.source());
        ConfigEntry cleanup = config.get("cleanup.policy");
        assertNotNull(cleanup, "cleanup.policy listed with its default");
        assertEquals("delete", cleanup.value());
        assertTrue(cleanup.isDefault());

        ConfigResource brokerResource = new ConfigResource(ConfigResource.Type.BROKER,
                Integer.toString(admin.describeCluster().nodes().get().iterator().next().id()));
        Config brokerConfig = admin.describeConfigs(List.of(brokerResource)).all().get().get(brokerResource);
        assertFalse(brokerConfig.entries().isEmpty(), "broker configs");

        // Legacy AlterConfigs replaces the whole set: segment.bytes goes back to its default.
        ConfigResource resource = new ConfigResource(ConfigResource.Type.TOPIC, topic);
        @SuppressWarnings("deprecation")
        Map<ConfigResource, Config> replace = Map.of(resource, new Config(List.of(new ConfigEntry("retention.ms", "7200000"))));
        @SuppressWarnings("deprecation")
        var legacy = admin.alterConfigs(replace);
        legacy.all().get();
        config = topicConfig(topic);
        assertEquals("7200000", config.get("retention.ms").value());
        assertTrue(config.get("segment.bytes").isDefault(), "segment.bytes after a legacy alter: " + config.get("segment.bytes"));

        // Incremental: SET one, DELETE another (back to the default).
        admin.incrementalAlterConfigs(Map.of(resource, List.of(
                new AlterConfigOp(new ConfigEntry("max.message.bytes", "2000000"), AlterConfigOp.OpType.SET),
                new AlterConfigOp(new ConfigEntry("retention.ms", ""), AlterConfigOp.OpType.DELETE)))).all().get();
        config = topicConfig(topic);
        assertEquals("2000000", config.get("max.message.bytes").value());
        assertEquals(ConfigEntry.ConfigSource.DYNAMIC_TOPIC_CONFIG, config.get("max.message.bytes").source());
        assertEquals("604800000", config.get("retention.ms").value());
        assertTrue(config.get("retention.ms").isDefault());

        // Invalid values and unknown names are refused.
        ExecutionException bad = assertThrows(ExecutionException.class, () -> admin.incrementalAlterConfigs(Map.of(resource,
                List.of(new AlterConfigOp(new ConfigEntry("retention.ms", "later"), AlterConfigOp.OpType.SET)))).all().get());
        assertInstanceOf(InvalidConfigurationException.class, cause(bad));
        ExecutionException unknown = assertThrows(ExecutionException.class, () -> admin.incrementalAlterConfigs(Map.of(resource,
                List.of(new AlterConfigOp(new ConfigEntry("no.such.config", "1"), AlterConfigOp.OpType.SET)))).all().get());
        assertInstanceOf(InvalidConfigurationException.class, cause(unknown));
    }

    @Test
    void topicCompressionTypeConfig() throws Exception {
        String topic = "admin-compression";
        admin.createTopics(List.of(new NewTopic(topic, 1, (short) 1).configs(Map.of("compression.type", "gzip")))).all().get();
        assertEquals("gzip", topicConfig(topic).get("compression.type").value());
        ConfigResource resource = new ConfigResource(ConfigResource.Type.TOPIC, topic);
        admin.incrementalAlterConfigs(Map.of(resource, List.of(
                new AlterConfigOp(new ConfigEntry("compression.type", "zstd"), AlterConfigOp.OpType.SET)))).all().get();
        assertEquals("zstd", topicConfig(topic).get("compression.type").value());
        try (KafkaProducer<String, String> producer = producer(Map.of())) {
            producer.send(new ProducerRecord<>(topic, "k", "v")).get();
        }
        assertEquals("v", readAll(topic, 1, Duration.ofSeconds(10)).get(0).value());
    }

    @Test
    void listOffsetsEarliestLatestMaxTimestampAndByTime() throws Exception {
        String topic = "admin-offsets";
        createTopic(topic, 1);
        long base = System.currentTimeMillis() - 60_000;
        long[] timestamps = {base + 1000, base + 2000, base + 5000, base + 3000, base + 4000};
        try (KafkaProducer<String, String> producer = producer(Map.of(ProducerConfig.ACKS_CONFIG, "all"))) {
            for (int i = 0; i < timestamps.length; i++) {
                producer.send(new ProducerRecord<>(topic, 0, timestamps[i], "k", "v" + i)).get();
            }
        }
        TopicPartition tp = new TopicPartition(topic, 0);
        assertEquals(0, offsets(tp, OffsetSpec.earliest()).offset());
        assertEquals(5, offsets(tp, OffsetSpec.latest()).offset());
        ListOffsetsResultInfo max = offsets(tp, OffsetSpec.maxTimestamp());
        assertEquals(2, max.offset());
        assertEquals(base + 5000, max.timestamp());
        ListOffsetsResultInfo byTime = offsets(tp, OffsetSpec.forTimestamp(base + 2500));
        assertEquals(2, byTime.offset(), "first offset with a timestamp >= base+2500");
        assertEquals(base + 5000, byTime.timestamp());
        assertEquals(0, offsets(tp, OffsetSpec.forTimestamp(base)).offset());
        assertEquals(-1, offsets(tp, OffsetSpec.forTimestamp(base + 10_000)).offset(), "no record that late");
    }

    private static ListOffsetsResultInfo offsets(TopicPartition tp, OffsetSpec spec) throws Exception {
        return admin.listOffsets(Map.of(tp, spec)).partitionResult(tp).get();
    }

    @Test
    void consumerGroupsDescribeListAlterAndDelete() throws Exception {
        String topic = "admin-groups";
        String group = "admin-group";
        createTopic(topic, 2);
        try (KafkaProducer<String, String> producer = producer(Map.of())) {
            for (int i = 0; i < 10; i++) {
                producer.send(new ProducerRecord<>(topic, i % 2, "k", "v" + i));
            }
        }
        TopicPartition p0 = new TopicPartition(topic, 0);
        TopicPartition p1 = new TopicPartition(topic, 1);
        try (KafkaConsumer<String, String> consumer = consumer(group, Map.of("client.id", "admin-test-client"))) {
            consumer.subscribe(List.of(topic));
            long deadline = System.nanoTime() + Duration.ofSeconds(30).toNanos();
            int read = 0;
            while (read < 10 && System.nanoTime() < deadline) {
                read += consumer.poll(Duration.ofMillis(200)).count();
            }
            assertEquals(10, read);
            consumer.commitSync();

            ConsumerGroupDescription active = admin.describeConsumerGroups(List.of(group)).all().get().get(group);
            assertEquals(ConsumerGroupState.STABLE, active.state());
            assertFalse(active.isSimpleConsumerGroup());
            assertEquals("range", active.partitionAssignor());
            assertEquals(1, active.members().size());
            var member = active.members().iterator().next();
            assertEquals("admin-test-client", member.clientId());
            assertEquals(Set.of(p0, p1), member.assignment().topicPartitions());
            assertNotNull(active.coordinator());

            // A group with members cannot be deleted.
            ExecutionException notEmpty = assertThrows(ExecutionException.class,
                    () -> admin.deleteConsumerGroups(List.of(group)).all().get());
            assertInstanceOf(GroupNotEmptyException.class, cause(notEmpty));
        }
        ConsumerGroupDescription empty = admin.describeConsumerGroups(List.of(group)).all().get().get(group);
        assertEquals(ConsumerGroupState.EMPTY, empty.state());
        assertTrue(empty.members().isEmpty());

        Collection<ConsumerGroupListing> listings = admin.listConsumerGroups().all().get();
        ConsumerGroupListing listing = listings.stream().filter(l -> l.groupId().equals(group)).findFirst().orElseThrow(
                () -> new AssertionError(group + " not in " + listings));
        assertEquals(Optional.of(ConsumerGroupState.EMPTY), listing.state());

        Map<TopicPartition, OffsetAndMetadata> offsets = admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get();
        assertEquals(5, offsets.get(p0).offset());
        assertEquals(5, offsets.get(p1).offset());

        admin.alterConsumerGroupOffsets(group, Map.of(p0, new OffsetAndMetadata(1, "rewound"))).all().get();
        offsets = admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get();
        assertEquals(1, offsets.get(p0).offset());
        assertEquals("rewound", offsets.get(p0).metadata());

        admin.deleteConsumerGroupOffsets(group, Set.of(p0)).all().get();
        offsets = admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get();
        assertFalse(offsets.containsKey(p0), offsets.toString());
        assertEquals(5, offsets.get(p1).offset());

        // Offsets committed for a group that never joined: a "simple" group, also listed.
        admin.alterConsumerGroupOffsets("admin-simple", Map.of(p1, new OffsetAndMetadata(3))).all().get();
        Map<String, ConsumerGroupListing> byId = new HashMap<>();
        admin.listConsumerGroups().all().get().forEach(l -> byId.put(l.groupId(), l));
        assertTrue(byId.containsKey("admin-simple"), byId.toString());

        admin.deleteConsumerGroups(List.of(group, "admin-simple")).all().get();
        Set<String> remaining = admin.listConsumerGroups().all().get().stream()
                .map(ConsumerGroupListing::groupId).collect(Collectors.toSet());
        assertFalse(remaining.contains(group), remaining.toString());
        ExecutionException unknown = assertThrows(ExecutionException.class,
                () -> admin.deleteConsumerGroups(List.of("no-such-group")).all().get());
        assertInstanceOf(GroupIdNotFoundException.class, cause(unknown));
    }

    @Test
    void listConsumerGroupsReportsTheClassicType() throws Exception {
        String group = "admin-typed";
        createTopic("admin-typed-topic", 1);
        try (KafkaConsumer<String, String> consumer = consumer(group, Map.of())) {
            consumer.subscribe(List.of("admin-typed-topic"));
            consumer.poll(Duration.ofSeconds(3));
            ConsumerGroupListing listing = admin.listConsumerGroups().all().get().stream()
                    .filter(l -> l.groupId().equals(group)).findFirst().orElseThrow();
            assertEquals(Optional.of(GroupType.CLASSIC), listing.type());
        }
    }
}
