package dev.broker.it;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.apache.kafka.clients.admin.Config;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.utils.Exit;
import org.apache.kafka.connect.cli.ConnectDistributed;
import org.apache.kafka.connect.runtime.Connect;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * Kafka Connect 3.9 in distributed mode against our broker: a real worker (Kafka's
 * ConnectDistributed, in this JVM) keeps its config, offset and status in compacted topics on our
 * broker, runs its group over the classic protocol ("connect" protocol type, incremental
 * cooperative rebalancing), and a FileStreamSource -> topic -> FileStreamSink pipeline created over
 * its REST API copies a file exactly, also across a worker restart (the source resumes from its
 * stored offset, the sink from its group's committed offset: no line twice, none lost).
 */
@Timeout(240)
class ConnectDistributedTest extends BrokerTestBase {
    private static final String CONFIG_TOPIC = "connect-configs";
    private static final String OFFSET_TOPIC = "connect-offsets";
    private static final String STATUS_TOPIC = "connect-status";
    private static final int OFFSET_PARTITIONS = 5;
    private static final int STATUS_PARTITIONS = 3;
    private static final Duration CONNECT_TIMEOUT = Duration.ofSeconds(60);

    private final HttpClient http = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(5)).build();
    private final ObjectMapper json = new ObjectMapper();
    private Connect<?> worker;
    private URI rest;

    @AfterEach
    void stopWorker() {
        if (worker != null) {
            worker.stop();
            worker = null;
        }
        Exit.resetExitProcedure();
        Exit.resetHaltProcedure();
    }

    @Test
    void fileSourceToFileSinkSurvivesAWorkerRestart() throws Exception {
        // Connect calls Exit.exit when it cannot start: in this JVM that must fail the test, not end it.
        Exit.setExitProcedure((code, message) -> {
            throw new IllegalStateException("Connect asked to exit " + code + ": " + message);
        });
        Exit.setHaltProcedure((code, message) -> {
            throw new IllegalStateException("Connect asked to halt " + code + ": " + message);
        });
        Path dir = Files.createTempDirectory("connect-it-");
        Path source = dir.resolve("source.txt");
        Path sink = dir.resolve("sink.txt");
        String topic = "connect-lines";
        createTopic(topic, 1);
        List<String> expected = new ArrayList<>();
        append(source, expected, 0, 500);

        startWorker();
        checkInternalTopics();
        createConnector("file-source", Map.of(
                "connector.class", "org.apache.kafka.connect.file.FileStreamSourceConnector",
                "tasks.max", "1", "file", source.toString(), "topic", topic));
        createConnector("file-sink", Map.of(
                "connector.class", "org.apache.kafka.connect.file.FileStreamSinkConnector",
                "tasks.max", "1", "file", sink.toString(), "topics", topic));
        awaitRunning("file-source");
        awaitRunning("file-sink");
        awaitCopy(sink, expected);

        // Lines appended while the worker runs, then more while it is down.
        append(source, expected, 500, 800);
        awaitCopy(sink, expected);
        worker.stop();
        worker = null;
        append(source, expected, 800, 1200);
        startWorker();
        awaitRunning("file-source");
        awaitRunning("file-sink");
        awaitCopy(sink, expected);
        // A little longer: a source that re-read the file from its start would add lines now.
        Thread.sleep(2_000);
        assertEquals(expected, Files.readAllLines(sink, StandardCharsets.UTF_8), "the sink holds each line once, in order");
        assertEquals(expected.size(), readAll(topic, expected.size(), Duration.ofSeconds(20)).size(), "the topic holds each line once");
        Broker.deleteTree(dir);
    }

    private void startWorker() throws Exception {
        int port = Broker.freePort();
        Map<String, String> props = new HashMap<>();
        props.put("bootstrap.servers", broker.bootstrap());
        props.put("group.id", "connect-it");
        props.put("key.converter", "org.apache.kafka.connect.json.JsonConverter");
        props.put("value.converter", "org.apache.kafka.connect.json.JsonConverter");
        props.put("key.converter.schemas.enable", "false");
        props.put("value.converter.schemas.enable", "false");
        props.put("config.storage.topic", CONFIG_TOPIC);
        props.put("offset.storage.topic", OFFSET_TOPIC);
        props.put("status.storage.topic", STATUS_TOPIC);
        props.put("config.storage.replication.factor", "1");
        props.put("offset.storage.replication.factor", "1");
        props.put("status.storage.replication.factor", "1");
        props.put("offset.storage.partitions", Integer.toString(OFFSET_PARTITIONS));
        props.put("status.storage.partitions", Integer.toString(STATUS_PARTITIONS));
        props.put("offset.flush.interval.ms", "500");
        props.put("listeners", "http://127.0.0.1:" + port);
        props.put("rest.advertised.host.name", "127.0.0.1");
        // The file connectors' ServiceLoader manifests: no scan of the whole test classpath.
        props.put("plugin.discovery", "service_load");
        // A worker that left did so cleanly: no wait for it to come back before reassigning.
        props.put("scheduled.rebalance.max.delay.ms", "1000");
        worker = new ConnectDistributed().startConnect(props);
        rest = URI.create("http://127.0.0.1:" + port);
        waitFor("Connect's REST API", () -> get("/").path("version").isTextual(), CONNECT_TIMEOUT);
    }

    /** Connect created its three topics compacted, with the partition counts it asked for. */
    private void checkInternalTopics() throws Exception {
        Map<String, Integer> partitions = Map.of(CONFIG_TOPIC, 1, OFFSET_TOPIC, OFFSET_PARTITIONS, STATUS_TOPIC, STATUS_PARTITIONS);
        Map<String, TopicDescription> described = admin.describeTopics(partitions.keySet()).allTopicNames().get();
        List<ConfigResource> resources = new ArrayList<>();
        for (Map.Entry<String, Integer> topic : partitions.entrySet()) {
            assertEquals(topic.getValue(), described.get(topic.getKey()).partitions().size(), topic.getKey() + " partitions");
            resources.add(new ConfigResource(ConfigResource.Type.TOPIC, topic.getKey()));
        }
        Map<ConfigResource, Config> configs = admin.describeConfigs(resources).all().get();
        for (ConfigResource resource : resources) {
            assertEquals("compact", configs.get(resource).get("cleanup.policy").value(), resource.name() + " cleanup.policy");
        }
    }

    private void createConnector(String name, Map<String, String> config) throws Exception {
        String body = json.writeValueAsString(Map.of("name", name, "config", config));
        HttpResponse<String> response = http.send(HttpRequest.newBuilder(rest.resolve("/connectors"))
                .header("Content-Type", "application/json")
                .timeout(Duration.ofSeconds(30))
                .POST(HttpRequest.BodyPublishers.ofString(body)).build(), HttpResponse.BodyHandlers.ofString());
        assertEquals(201, response.statusCode(), "POST /connectors " + name + ": " + response.body());
    }

    /** The connector and its one task report RUNNING. */
    private void awaitRunning(String name) {
        waitFor(name + " RUNNING", () -> {
            JsonNode status = get("/connectors/" + name + "/status");
            return "RUNNING".equals(status.path("connector").path("state").asText())
                    && status.path("tasks").size() == 1
                    && "RUNNING".equals(status.path("tasks").get(0).path("state").asText());
        }, CONNECT_TIMEOUT, () -> get("/connectors/" + name + "/status").toString());
    }

    private void awaitCopy(Path sink, List<String> expected) {
        waitFor("the sink file to hold " + expected.size() + " lines", () -> lines(sink).size() >= expected.size(), CONNECT_TIMEOUT,
                () -> "(it holds " + lines(sink).size() + ")");
        assertEquals(expected, lines(sink), "the sink file is the source file");
    }

    private static void append(Path file, List<String> expected, int from, int to) throws Exception {
        StringBuilder text = new StringBuilder();
        for (int i = from; i < to; i++) {
            String line = "line " + i + " of the source file, " + "x".repeat(i % 40);
            expected.add(line);
            text.append(line).append('\n');
        }
        Files.writeString(file, text, StandardCharsets.UTF_8, StandardOpenOption.CREATE, StandardOpenOption.APPEND);
    }

    private static List<String> lines(Path file) {
        try {
            return Files.exists(file) ? Files.readAllLines(file, StandardCharsets.UTF_8) : List.of();
        } catch (Exception e) {
            return List.of();
        }
    }

    /** GET on Connect's REST API; an empty node while it is not answering yet. */
    private JsonNode get(String path) {
        try {
            HttpResponse<String> response = http.send(HttpRequest.newBuilder(rest.resolve(path)).timeout(Duration.ofSeconds(10)).GET().build(),
                    HttpResponse.BodyHandlers.ofString());
            return response.statusCode() == 200 ? json.readTree(response.body()) : json.createObjectNode().put("http", response.statusCode()).put("body", response.body());
        } catch (Exception e) {
            return json.createObjectNode().put("error", e.toString());
        }
    }
}
