package dev.broker.it;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.time.Duration;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import org.apache.kafka.clients.admin.ConsumerGroupDescription;
import org.apache.kafka.clients.admin.MemberDescription;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.CooperativeStickyAssignor;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.consumer.RangeAssignor;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.ConsumerGroupState;
import org.apache.kafka.common.TopicPartition;
import org.junit.jupiter.api.Test;

/** Consumer groups as a Java application uses them: assignors, static membership, commits. */
class ConsumerGroupTest extends BrokerTestBase {
    private static final Duration REBALANCE = Duration.ofSeconds(30);

    private static Map<String, Object> assignor(Class<?> assignor) {
        return Map.of(ConsumerConfig.PARTITION_ASSIGNMENT_STRATEGY_CONFIG, assignor.getName());
    }

    private static void produce(String topic, int count, String prefix) throws Exception {
        try (KafkaProducer<String, String> producer = producer(Map.of(ProducerConfig.ACKS_CONFIG, "all"))) {
            for (int i = 0; i < count; i++) {
                producer.send(new ProducerRecord<>(topic, "key-" + i, prefix + i));
            }
            producer.flush();
        }
    }

    private static boolean splitEvenly(Member a, Member b, int partitions) {
        Set<Integer> union = new HashSet<>(a.ownedPartitions());
        union.addAll(b.ownedPartitions());
        return a.ownedPartitions().size() == partitions / 2 && b.ownedPartitions().size() == partitions / 2
                && union.size() == partitions;
    }

    /** Every produced value came exactly once, each from the member that owns its partition. */
    private static void assertConsumedOnce(int count, String prefix, Member... members) {
        waitFor(count + " records", () -> {
            int total = 0;
            for (Member m : members) {
                total += m.records.size();
            }
            return total >= count;
        }, Duration.ofSeconds(30), () -> List.of(members).toString());
        Set<String> values = new HashSet<>();
        for (Member m : members) {
            for (ConsumerRecord<String, String> record : m.records) {
                assertTrue(values.add(record.value()), record.value() + " consumed twice");
                assertTrue(m.ownedPartitions().contains(record.partition()),
                        m.name + " got partition " + record.partition() + " it does not own");
            }
        }
        for (int i = 0; i < count; i++) {
            assertTrue(values.contains(prefix + i), prefix + i + " never consumed");
        }
    }

    @Test
    void eagerRangeAssignorSplitsPartitionsBetweenTwoMembers() throws Exception {
        String topic = "groups-range";
        createTopic(topic, 4);
        try (Member a = new Member("a", consumer("range-group", assignor(RangeAssignor.class)), List.of(topic))) {
            waitFor("a owns all 4 partitions", () -> a.ownedPartitions().size() == 4, REBALANCE, a::toString);
            int firstGeneration = a.generation();
            try (Member b = new Member("b", consumer("range-group", assignor(RangeAssignor.class)), List.of(topic))) {
                waitFor("a 2/b 2", () -> splitEvenly(a, b, 4), REBALANCE, () -> a + "; " + b);
                // Range: each member gets two adjacent partitions.
                Set<Set<Integer>> split = Set.of(a.ownedPartitions(), b.ownedPartitions());
                assertEquals(Set.of(Set.of(0, 1), Set.of(2, 3)), split, a + "; " + b);
                // Eager: the second join revoked every partition from a first.
                assertEquals(4, new HashSet<>(a.revoked).size(), "eager revokes all: " + a.revoked);
                assertTrue(a.generation() > firstGeneration && a.generation() == b.generation(), a + "; " + b);
                produce(topic, 200, "range-");
                assertConsumedOnce(200, "range-", a, b);
                assertNull(a.failure.get());
                assertNull(b.failure.get());
            }
            // b left the group: a gets everything back.
            waitFor("a owns all 4 again", () -> a.ownedPartitions().size() == 4, REBALANCE, a::toString);
        }
    }

    @Test
    void cooperativeStickyAssignorMovesOnlyWhatItMust() throws Exception {
        String topic = "groups-cooperative";
        createTopic(topic, 4);
        try (Member a = new Member("a", consumer("coop-group", assignor(CooperativeStickyAssignor.class)), List.of(topic))) {
            waitFor("a owns all 4 partitions", () -> a.ownedPartitions().size() == 4, REBALANCE, a::toString);
            try (Member b = new Member("b", consumer("coop-group", assignor(CooperativeStickyAssignor.class)), List.of(topic))) {
                waitFor("a 2/b 2", () -> splitEvenly(a, b, 4), REBALANCE, () -> a + "; " + b);
                // Incremental: a gave up exactly the two partitions b got, and nothing else.
                Set<Integer> revoked = new TreeSet<>();
                a.revoked.forEach(tp -> revoked.add(tp.partition()));
                assertEquals(b.ownedPartitions(), revoked, "a revoked " + a.revoked + "; " + b);
                assertEquals(2, a.revoked.size(), "revoked once each: " + a.revoked);
                produce(topic, 200, "coop-");
                assertConsumedOnce(200, "coop-", a, b);
                assertNull(a.failure.get());
                assertNull(b.failure.get());
            }
        }
    }

    @Test
    void staticMemberRejoinsWithoutRebalance() throws Exception {
        String topic = "groups-static";
        String group = "static-group";
        createTopic(topic, 4);
        Map<String, Object> a = new HashMap<>(assignor(RangeAssignor.class));
        a.put(ConsumerConfig.GROUP_INSTANCE_ID_CONFIG, "instance-a");
        Map<String, Object> b = new HashMap<>(assignor(RangeAssignor.class));
        b.put(ConsumerConfig.GROUP_INSTANCE_ID_CONFIG, "instance-b");
        try (Member memberA = new Member("a", consumer(group, a), List.of(topic))) {
            Set<Integer> ownedByB;
            try (Member memberB = new Member("b", consumer(group, b), List.of(topic))) {
                waitFor("a 2/b 2", () -> splitEvenly(memberA, memberB, 4), REBALANCE, () -> memberA + "; " + memberB);
                ownedByB = memberB.ownedPartitions();
                ConsumerGroupDescription description = admin.describeConsumerGroups(List.of(group)).all().get().get(group);
                Set<String> instances = new TreeSet<>();
                for (MemberDescription member : description.members()) {
                    instances.add(member.groupInstanceId().orElse("(none)"));
                }
                assertEquals(Set.of("instance-a", "instance-b"), instances);
            }
            // A static member's close sends no LeaveGroup: the group keeps both members, stable.
            ConsumerGroupDescription afterClose = admin.describeConsumerGroups(List.of(group)).all().get().get(group);
            assertEquals(2, afterClose.members().size(), afterClose.toString());
            int revokedBefore = memberA.revoked.size();
            int generationBefore = memberA.generation();
            try (Member memberB = new Member("b2", consumer(group, b), List.of(topic))) {
                waitFor("b2 gets b's partitions back", () -> memberB.ownedPartitions().equals(ownedByB), REBALANCE,
                        () -> memberA + "; " + memberB + "; b had " + ownedByB);
                Thread.sleep(1500); // a few heartbeats: a rebalance would show now
                assertEquals(revokedBefore, memberA.revoked.size(), "a static member's return made a rebalance: " + memberA.revoked);
                assertEquals(generationBefore, memberA.generation());
                assertEquals(2, memberA.ownedPartitions().size());
            }
        }
    }

    @Test
    void committedOffsetsSurviveAConsumerRestart() throws Exception {
        String topic = "groups-commit";
        String group = "commit-group";
        createTopic(topic, 2);
        produce(topic, 100, "commit-");
        Map<String, Object> manual = Map.of(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false,
                ConsumerConfig.MAX_POLL_RECORDS_CONFIG, 10);
        List<String> firstRun = new ArrayList<>();
        Map<TopicPartition, OffsetAndMetadata> committed = new HashMap<>();
        try (KafkaConsumer<String, String> consumer = consumer(group, manual)) {
            consumer.subscribe(List.of(topic));
            long deadline = System.nanoTime() + Duration.ofSeconds(30).toNanos();
            while (firstRun.size() < 40 && System.nanoTime() < deadline) {
                for (ConsumerRecord<String, String> record : consumer.poll(Duration.ofMillis(200))) {
                    firstRun.add(record.value());
                    committed.put(new TopicPartition(topic, record.partition()),
                            new OffsetAndMetadata(record.offset() + 1, "after " + record.value()));
                }
            }
            assertTrue(firstRun.size() >= 40, "first run read " + firstRun.size());
            consumer.commitSync(committed);
            Map<TopicPartition, OffsetAndMetadata> read = consumer.committed(committed.keySet());
            assertEquals(committed, read);
        }
        // The admin sees the same offsets and metadata.
        assertEquals(committed, admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get());

        // A new consumer in the group starts where the first one committed: nothing twice, nothing lost.
        List<String> secondRun = new ArrayList<>();
        Map<String, Object> auto = Map.of(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, true,
                ConsumerConfig.AUTO_COMMIT_INTERVAL_MS_CONFIG, 200);
        try (KafkaConsumer<String, String> consumer = consumer(group, auto)) {
            consumer.subscribe(List.of(topic));
            long deadline = System.nanoTime() + Duration.ofSeconds(30).toNanos();
            while (firstRun.size() + secondRun.size() < 100 && System.nanoTime() < deadline) {
                consumer.poll(Duration.ofMillis(200)).forEach(r -> secondRun.add(r.value()));
            }
        } // close() commits what it consumed (auto-commit)
        List<String> all = new ArrayList<>(firstRun);
        all.addAll(secondRun);
        Collections.sort(all);
        List<String> expected = new ArrayList<>();
        for (int i = 0; i < 100; i++) {
            expected.add("commit-" + i);
        }
        Collections.sort(expected);
        assertEquals(expected, all, "first run " + firstRun.size() + ", second run " + secondRun.size());

        // A third consumer finds nothing left; the group is empty between them.
        ConsumerGroupDescription empty = admin.describeConsumerGroups(List.of(group)).all().get().get(group);
        assertEquals(ConsumerGroupState.EMPTY, empty.state());
        try (KafkaConsumer<String, String> consumer = consumer(group, Map.of())) {
            consumer.subscribe(List.of(topic));
            long deadline = System.nanoTime() + Duration.ofSeconds(3).toNanos();
            int extra = 0;
            while (System.nanoTime() < deadline) {
                extra += consumer.poll(Duration.ofMillis(200)).count();
            }
            assertEquals(0, extra, "records after the auto-committed offsets");
            for (TopicPartition partition : committed.keySet()) {
                assertEquals(consumer.endOffsets(List.of(partition)).get(partition), consumer.position(partition));
            }
        }
    }
}
