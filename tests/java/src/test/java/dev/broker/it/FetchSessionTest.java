package dev.broker.it;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.net.ServerSocket;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.Uuid;
import org.apache.kafka.common.errors.TopicExistsException;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * Fetch sessions (KIP-227) with Apache Kafka's Java consumer, which fetches in sessions by
 * default: following 1,200 partitions of which three get records, its incremental fetches come
 * back with no partition while idle and with those three only when records come (read from the
 * broker's metrics). And Fetch by topic id (KIP-516): the 3.9 consumer fetches with v17 only,
 * and goes on reading a topic deleted and created again under its name (a new topic id).
 */
class FetchSessionTest extends BrokerTestBase {
    private static String metrics;

    /** The class's broker again, with a metrics listener. */
    @BeforeAll
    static void withMetrics() throws Exception {
        admin.close(Duration.ofSeconds(5));
        broker.close();
        try (ServerSocket socket = new ServerSocket(0)) {
            metrics = "127.0.0.1:" + socket.getLocalPort();
        }
        broker = Broker.start("FetchSessionTest-metrics", "metrics.listener=http://" + metrics);
        admin = Admin.create(adminProps());
    }

    private static Map<String, Double> scrape() {
        try {
            HttpResponse<String> response = HttpClient.newHttpClient().send(
                    HttpRequest.newBuilder(URI.create("http://" + metrics + "/metrics")).build(), HttpResponse.BodyHandlers.ofString());
            Map<String, Double> values = new HashMap<>();
            for (String line : response.body().split("\n")) {
                int space = line.lastIndexOf(' ');
                if (!line.startsWith("#") && space > 0) {
                    values.put(line.substring(0, space), Double.parseDouble(line.substring(space + 1)));
                }
            }
            return values;
        } catch (Exception e) {
            throw new RuntimeException(e);
        }
    }

    private static double delta(Map<String, Double> after, Map<String, Double> before, String name) {
        return after.getOrDefault(name, 0.0) - before.getOrDefault(name, 0.0);
    }

    @Test
    void aConsumerOf1200PartitionsGetsOnlyWhatChanged() throws Exception {
        String topic = "sessions-wide";
        int partitions = 1200;
        createTopic(topic, partitions);
        try (KafkaConsumer<String, String> consumer = consumer(null, Map.of())) {
            List<TopicPartition> all = new ArrayList<>();
            for (int p = 0; p < partitions; p++) {
                all.add(new TopicPartition(topic, p));
            }
            consumer.assign(all);
            consumer.seekToBeginning(all);
            waitFor("a session holding every partition", () -> {
                consumer.poll(Duration.ofMillis(100));
                Map<String, Double> m = scrape();
                return m.getOrDefault("kafka_server_fetchsessioncache_numincrementalfetchpartitionscached", 0.0) >= partitions
                        && m.getOrDefault("broker_incremental_fetch_responses_total", 0.0) >= 2;
            }, Duration.ofSeconds(60));
            Map<String, Double> before = scrape();
            long idleUntil = System.currentTimeMillis() + 2000;
            while (System.currentTimeMillis() < idleUntil) {
                consumer.poll(Duration.ofMillis(100));
            }
            Map<String, Double> idle = scrape();
            assertTrue(delta(idle, before, "broker_incremental_fetch_responses_total") >= 2, "idle fetches go on");
            assertEquals(0.0, delta(idle, before, "broker_incremental_fetch_response_partitions_total"), "idle answers carry nothing");

            int[] busy = {7, 600, 1199};
            Set<String> expected = new HashSet<>();
            try (KafkaProducer<String, String> producer = producer(Map.of())) {
                for (int p : busy) {
                    for (int i = 0; i < 5; i++) {
                        String value = p + "-" + i;
                        expected.add(value);
                        producer.send(new ProducerRecord<>(topic, p, null, value));
                    }
                }
                producer.flush();
            }
            Set<String> got = new HashSet<>();
            waitFor("15 records", () -> {
                for (ConsumerRecord<String, String> record : consumer.poll(Duration.ofMillis(100))) {
                    got.add(record.value());
                }
                return got.size() >= expected.size();
            }, Duration.ofSeconds(30));
            assertEquals(expected, got);
            Map<String, Double> after = scrape();
            double answered = delta(after, idle, "broker_incremental_fetch_response_partitions_total");
            assertTrue(answered >= 3 && answered <= 12, "partitions in incremental answers: " + answered);
            assertTrue(after.getOrDefault("kafka_network_requestmetrics_requests_total{request=\"FetchConsumer\"}", 0.0) > 0);
        }
    }

    private static Uuid topicId(String topic) throws Exception {
        return admin.describeTopics(List.of(topic)).allTopicNames().get().get(topic).topicId();
    }

    @Test
    void theConsumerFetchesByTopicIdAndFollowsARecreatedTopic() throws Exception {
        String topic = "by-topic-id";
        createTopic(topic, 2);
        Uuid oldId = topicId(topic);
        Map<String, Double> before = scrape();
        try (KafkaProducer<String, String> producer = producer(Map.of());
                KafkaConsumer<String, String> consumer = consumer(null, Map.of())) {
            for (int i = 0; i < 10; i++) {
                producer.send(new ProducerRecord<>(topic, i % 2, null, "old-" + i));
            }
            producer.flush();
            List<TopicPartition> partitions = List.of(new TopicPartition(topic, 0), new TopicPartition(topic, 1));
            consumer.assign(partitions);
            consumer.seekToBeginning(partitions);
            Set<String> got = new HashSet<>();
            waitFor("10 records", () -> {
                consumer.poll(Duration.ofMillis(100)).forEach(r -> got.add(r.value()));
                return got.size() >= 10;
            }, Duration.ofSeconds(30));
            // A request is counted once its response is written: the last one may land just
            // after the consumer has its records.
            String v17 = "broker_requests_by_version_total{request=\"Fetch\",version=\"17\"}";
            waitFor("Fetch v17 requests counted", () -> delta(scrape(), before, v17) > 0, Duration.ofSeconds(10));
            Map<String, Double> after = scrape();
            for (int version = 0; version < 17; version++) {
                String series = "broker_requests_by_version_total{request=\"Fetch\",version=\"" + version + "\"}";
                assertEquals(0.0, delta(after, before, series), series);
            }

            // Deleted and created again under its name: a new id, which the consumer learns from
            // Metadata after its fetches by the old id fail (UNKNOWN_TOPIC_ID or
            // INCONSISTENT_TOPIC_ID); its positions (5 each) are past the new logs' ends, so it
            // starts over from the earliest offset (auto.offset.reset) and reads the new records.
            admin.deleteTopics(List.of(topic)).all().get();
            waitFor("the topic created again", () -> {
                try {
                    createTopic(topic, 2);
                    return true;
                } catch (Exception e) {
                    if (e.getCause() instanceof TopicExistsException) {
                        return false;
                    }
                    throw new RuntimeException(e);
                }
            }, Duration.ofSeconds(30));
            assertNotEquals(oldId, topicId(topic));
            for (int i = 0; i < 4; i++) {
                producer.send(new ProducerRecord<>(topic, i % 2, null, "new-" + i));
            }
            producer.flush();
            waitFor("the new topic's 4 records", () -> {
                consumer.poll(Duration.ofMillis(100)).forEach(r -> got.add(r.value()));
                return got.containsAll(Set.of("new-0", "new-1", "new-2", "new-3"));
            }, Duration.ofSeconds(60), () -> got.toString());
        }
    }
}
