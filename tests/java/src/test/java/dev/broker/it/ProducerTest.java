package dev.broker.it;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.Future;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.apache.kafka.common.record.TimestampType;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/** kafka-clients' producer: idempotence, acks=all, every codec; read back once and in order. */
class ProducerTest extends BrokerTestBase {
    private static final int RECORDS = 3000;
    private static final int PARTITIONS = 3;

    @ParameterizedTest(name = "compression.type={0}")
    @ValueSource(strings = {"none", "gzip", "snappy", "lz4", "zstd"})
    void idempotentAcksAllEveryCodecReadBackOnceInOrder(String codec) throws Exception {
        String topic = "produce-" + codec;
        createTopic(topic, PARTITIONS);
        Map<String, Object> config = Map.of(
                ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, true,
                ProducerConfig.ACKS_CONFIG, "all",
                ProducerConfig.COMPRESSION_TYPE_CONFIG, codec,
                ProducerConfig.MAX_IN_FLIGHT_REQUESTS_PER_CONNECTION, 5,
                ProducerConfig.LINGER_MS_CONFIG, 5,
                ProducerConfig.BATCH_SIZE_CONFIG, 8192);
        List<Future<RecordMetadata>> sent = new ArrayList<>();
        try (KafkaProducer<String, String> producer = producer(config)) {
            for (int i = 0; i < RECORDS; i++) {
                // Compressible values, and keys spread over the partitions.
                String value = "record-" + i + "-" + "abcdefgh".repeat(8);
                ProducerRecord<String, String> record = new ProducerRecord<>(topic, null, "key-" + (i % 37), value,
                        new RecordHeaders().add("seq", Integer.toString(i).getBytes(StandardCharsets.UTF_8)));
                sent.add(producer.send(record));
            }
            producer.flush();
        }
        // Acknowledged offsets: distinct and increasing in send order within each partition.
        Map<Integer, Long> lastOffset = new HashMap<>();
        Map<String, Long> offsetOf = new HashMap<>();
        for (int i = 0; i < RECORDS; i++) {
            RecordMetadata metadata = sent.get(i).get();
            Long previous = lastOffset.put(metadata.partition(), metadata.offset());
            assertTrue(previous == null || metadata.offset() > previous,
                    "record " + i + " acked at offset " + metadata.offset() + " after " + previous + " on partition " + metadata.partition());
            offsetOf.put("record-" + i, metadata.offset());
        }
        assertEquals(PARTITIONS, lastOffset.size(), "the keys spread over every partition");

        List<ConsumerRecord<String, String>> records = readAll(topic, RECORDS, Duration.ofSeconds(30));
        assertEquals(RECORDS, records.size(), "every record exactly once");
        Set<Integer> seen = new HashSet<>();
        Map<Integer, Integer> lastSeqPerPartition = new HashMap<>();
        for (ConsumerRecord<String, String> record : records) {
            int seq = Integer.parseInt(record.value().split("-")[1]);
            assertTrue(seen.add(seq), "record " + seq + " read twice");
            assertEquals("key-" + (seq % 37), record.key());
            assertArrayEquals(Integer.toString(seq).getBytes(StandardCharsets.UTF_8), record.headers().lastHeader("seq").value());
            assertEquals(offsetOf.get("record-" + seq), record.offset(), "record " + seq + " read at another offset than acked");
            Integer previous = lastSeqPerPartition.put(record.partition(), seq);
            assertTrue(previous == null || seq > previous, "partition " + record.partition() + ": record " + seq + " after " + previous);
            assertEquals(TimestampType.CREATE_TIME, record.timestampType());
        }
    }

    @Test
    void keysValuesHeadersAndTimestampsRoundTrip() throws Exception {
        String topic = "produce-fields";
        createTopic(topic, 1);
        long timestamp = 1_700_000_000_000L;
        try (KafkaProducer<String, String> producer = producer(Map.of(ProducerConfig.ACKS_CONFIG, "all"))) {
            RecordHeaders headers = new RecordHeaders();
            headers.add("a", "1".getBytes(StandardCharsets.UTF_8));
            headers.add("a", "2".getBytes(StandardCharsets.UTF_8));
            headers.add("empty", new byte[0]);
            producer.send(new ProducerRecord<>(topic, 0, timestamp, "k", "v", headers)).get();
            producer.send(new ProducerRecord<>(topic, 0, timestamp + 1, (String) null, "no key")).get();
            producer.send(new ProducerRecord<>(topic, 0, timestamp + 2, "tombstone", (String) null)).get();
            producer.send(new ProducerRecord<>(topic, 0, timestamp + 3, "big", "x".repeat(500_000))).get();
        }
        List<ConsumerRecord<String, String>> records = readAll(topic, 4, Duration.ofSeconds(20));
        assertEquals(4, records.size());
        ConsumerRecord<String, String> first = records.get(0);
        assertEquals("k", first.key());
        assertEquals("v", first.value());
        assertEquals(timestamp, first.timestamp());
        List<String> values = new ArrayList<>();
        first.headers().headers("a").forEach(h -> values.add(new String(h.value(), StandardCharsets.UTF_8)));
        assertEquals(List.of("1", "2"), values);
        assertEquals(0, first.headers().lastHeader("empty").value().length);
        assertNull(records.get(1).key());
        assertEquals("no key", records.get(1).value());
        assertEquals(timestamp + 1, records.get(1).timestamp());
        assertNull(records.get(2).value());
        assertEquals(500_000, records.get(3).value().length());
        for (int i = 0; i < 4; i++) {
            assertEquals(i, records.get(i).offset());
        }
        // A fetch limit below the record's size still returns it (KIP-74), and read_committed
        // reads non-transactional records like read_uncommitted.
        try (KafkaConsumer<String, String> consumer = consumer(null, Map.of(
                ConsumerConfig.MAX_PARTITION_FETCH_BYTES_CONFIG, 1024,
                ConsumerConfig.FETCH_MAX_BYTES_CONFIG, 1024,
                ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed"))) {
            TopicPartition partition = new TopicPartition(topic, 0);
            consumer.assign(List.of(partition));
            consumer.seekToBeginning(List.of(partition));
            List<ConsumerRecord<String, String>> small = new ArrayList<>();
            long deadline = System.nanoTime() + Duration.ofSeconds(20).toNanos();
            while (small.size() < 4 && System.nanoTime() < deadline) {
                consumer.poll(Duration.ofMillis(200)).forEach(small::add);
            }
            assertEquals(4, small.size());
            assertEquals(500_000, small.get(3).value().length());
            assertEquals(4, consumer.endOffsets(List.of(partition)).get(partition), "last stable offset");
        }
    }

    @Test
    void producingToAnUnknownTopicCreatesIt() throws Exception {
        String topic = "produce-auto-created";
        try (KafkaProducer<String, String> producer = producer(Map.of(ProducerConfig.ACKS_CONFIG, "all"))) {
            RecordMetadata metadata = producer.send(new ProducerRecord<>(topic, "k", "v")).get();
            assertEquals(0, metadata.offset());
        }
        assertEquals("v", readAll(topic, 1, Duration.ofSeconds(20)).get(0).value());
        assertTrue(admin.listTopics().names().get().contains(topic));
    }
}
