package dev.broker.it;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.InvalidProducerEpochException;
import org.apache.kafka.common.errors.ProducerFencedException;
import org.junit.jupiter.api.Test;

/**
 * kafka-clients' transactional producer (issue 18): commit, abort, fencing, and a
 * consume-transform-produce loop whose group offsets commit with its transactions. Most checks
 * read uncommitted and count records and markers by offsets; readCommittedSeesNoAbortedRecord
 * reads as a read_committed consumer.
 */
class TransactionsTest extends BrokerTestBase {
    private static KafkaProducer<String, String> transactional(String transactionalId) {
        KafkaProducer<String, String> producer = producer(Map.of(ProducerConfig.TRANSACTIONAL_ID_CONFIG, transactionalId));
        producer.initTransactions();
        return producer;
    }

    private static long endOffset(String topic, int partition) throws Exception {
        TopicPartition tp = new TopicPartition(topic, partition);
        return admin.listOffsets(Map.of(tp, org.apache.kafka.clients.admin.OffsetSpec.latest())).partitionResult(tp).get().offset();
    }

    @Test
    void commitAndAbort() throws Exception {
        String topic = "java-txn";
        createTopic(topic, 1);
        try (KafkaProducer<String, String> producer = transactional("java-txn-id")) {
            producer.beginTransaction();
            for (int i = 0; i < 5; i++) producer.send(new ProducerRecord<>(topic, "k", "aborted-" + i));
            producer.flush(); // in the log: an abort drops batches not yet sent
            producer.abortTransaction();
            producer.beginTransaction();
            for (int i = 0; i < 3; i++) producer.send(new ProducerRecord<>(topic, "k", "committed-" + i));
            producer.commitTransaction();
        }
        // 5 aborted records, their ABORT marker, 3 committed records, their COMMIT marker.
        // The markers follow the commit asynchronously.
        waitFor("both markers", () -> {
            try {
                return endOffset(topic, 0) == 10;
            } catch (Exception e) {
                return false;
            }
        }, Duration.ofSeconds(15));
        List<ConsumerRecord<String, String>> records = readAll(topic, 8, Duration.ofSeconds(30));
        assertEquals(8, records.size(), "no control record reaches the application");
        assertEquals(3, records.stream().filter(r -> r.value().startsWith("committed-")).count());
    }

    @Test
    void readCommittedSeesNoAbortedRecord() throws Exception {
        String topic = "java-txn-rc";
        createTopic(topic, 1);
        TopicPartition tp = new TopicPartition(topic, 0);
        try (KafkaProducer<String, String> producer = transactional("java-txn-rc-id");
                KafkaProducer<String, String> plain = producer(Map.of());
                KafkaConsumer<String, String> consumer = consumer(null, Map.of(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed"))) {
            producer.beginTransaction();
            for (int i = 0; i < 5; i++) producer.send(new ProducerRecord<>(topic, "k", "aborted-" + i));
            producer.flush();
            producer.abortTransaction();
            producer.beginTransaction();
            for (int i = 0; i < 3; i++) producer.send(new ProducerRecord<>(topic, "k", "committed-" + i));
            producer.commitTransaction();
            // An open transaction, and a plain record after it: both wait behind the LSO.
            producer.beginTransaction();
            producer.send(new ProducerRecord<>(topic, "k", "open-0"));
            producer.flush();
            plain.send(new ProducerRecord<>(topic, "k", "plain-after")).get();

            consumer.assign(List.of(tp));
            consumer.seekToBeginning(List.of(tp));
            List<String> values = new ArrayList<>();
            waitFor("the committed records", () -> {
                consumer.poll(Duration.ofMillis(100)).forEach(r -> values.add(r.value()));
                return values.size() >= 3;
            }, Duration.ofSeconds(20), () -> "values " + values);
            for (int i = 0; i < 5; i++) consumer.poll(Duration.ofMillis(100)).forEach(r -> values.add(r.value()));
            assertEquals(List.of("committed-0", "committed-1", "committed-2"), values, "no aborted record, nothing past the LSO");

            producer.commitTransaction();
            waitFor("the records behind the LSO", () -> {
                consumer.poll(Duration.ofMillis(100)).forEach(r -> values.add(r.value()));
                return values.size() >= 5;
            }, Duration.ofSeconds(20), () -> "values " + values);
            for (int i = 0; i < 3; i++) consumer.poll(Duration.ofMillis(100)).forEach(r -> values.add(r.value()));
            assertEquals(List.of("committed-0", "committed-1", "committed-2", "open-0", "plain-after"), values);
        }
    }

    @Test
    void aSecondProducerFencesTheFirst() throws Exception {
        String topic = "java-fence";
        createTopic(topic, 1);
        try (KafkaProducer<String, String> first = transactional("java-fence-id")) {
            first.beginTransaction();
            first.send(new ProducerRecord<>(topic, "k", "zombie")).get();
            try (KafkaProducer<String, String> second = transactional("java-fence-id")) {
                // As against Kafka: the partition's producer epoch moved with the fencing abort's
                // marker (INVALID_PRODUCER_EPOCH on produce), the coordinator's too (PRODUCER_FENCED).
                Exception zombie = assertThrows(Exception.class, () -> {
                    first.send(new ProducerRecord<>(topic, "k", "zombie-2")).get();
                    first.commitTransaction();
                });
                Throwable cause = zombie instanceof java.util.concurrent.ExecutionException ? zombie.getCause() : zombie;
                assertTrue(cause instanceof ProducerFencedException || cause instanceof InvalidProducerEpochException, "fenced: " + zombie);
                second.beginTransaction();
                second.send(new ProducerRecord<>(topic, "k", "winner"));
                second.commitTransaction();
            }
        } catch (ProducerFencedException | InvalidProducerEpochException expected) {
            // close() of a fenced producer may say it again
        }
    }

    @Test
    void consumeTransformProduceWithSendOffsetsToTransaction() throws Exception {
        String input = "java-ctp-in";
        String output = "java-ctp-out";
        String group = "java-ctp";
        int total = 60;
        createTopic(input, 3);
        createTopic(output, 2);
        try (KafkaProducer<String, String> plain = producer(Map.of())) {
            for (int i = 0; i < total; i++) plain.send(new ProducerRecord<>(input, "k" + i, "in-" + i));
            plain.flush();
        }
        int transformed = 0;
        try (KafkaProducer<String, String> producer = transactional("java-ctp-id");
                KafkaConsumer<String, String> consumer = consumer(group, Map.of(
                        ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false,
                        ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest"))) {
            consumer.subscribe(List.of(input));
            long deadline = System.nanoTime() + Duration.ofSeconds(60).toNanos();
            while (transformed < total && System.nanoTime() < deadline) {
                ConsumerRecords<String, String> records = consumer.poll(Duration.ofMillis(200));
                if (records.isEmpty()) continue;
                producer.beginTransaction();
                Map<TopicPartition, OffsetAndMetadata> next = new HashMap<>();
                for (ConsumerRecord<String, String> record : records) {
                    producer.send(new ProducerRecord<>(output, record.key(), "out-" + record.value()));
                    next.put(new TopicPartition(record.topic(), record.partition()), new OffsetAndMetadata(record.offset() + 1));
                }
                producer.sendOffsetsToTransaction(next, consumer.groupMetadata());
                producer.commitTransaction();
                transformed += records.count();
            }
        }
        assertEquals(total, transformed);
        Map<TopicPartition, OffsetAndMetadata> committed = admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get();
        assertEquals(total, committed.values().stream().mapToLong(OffsetAndMetadata::offset).sum(), "the offsets committed with the transactions");
        List<ConsumerRecord<String, String>> out = readAll(output, total, Duration.ofSeconds(30));
        List<String> values = new ArrayList<>();
        out.forEach(r -> values.add(r.value()));
        assertEquals(total, values.size());
        assertEquals(total, new HashSet<>(values).size(), "each input transformed once");
    }
}
