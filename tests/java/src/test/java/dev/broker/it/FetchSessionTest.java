package dev.broker.it;

import static org.junit.jupiter.api.Assertions.assertEquals;
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
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * Fetch sessions (KIP-227) with Apache Kafka's Java consumer, which fetches in sessions by
 * default: following 1,200 partitions of which three get records, its incremental fetches come
 * back with no partition while idle and with those three only when records come (read from the
 * broker's metrics).
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
}
