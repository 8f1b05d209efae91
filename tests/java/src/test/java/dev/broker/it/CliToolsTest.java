package dev.broker.it;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import org.junit.jupiter.api.Test;

/**
 * Kafka's CLI tools (kafka-topics, kafka-console-producer/consumer, kafka-consumer-groups,
 * kafka-configs), run through their main classes from the 3.9 jars, output checked.
 */
class CliToolsTest extends BrokerTestBase {

    private static Tool.Result ok(String[] tool, String stdin, String... args) {
        Tool.Result result = Tool.run(tool, stdin, args);
        assertEquals(0, result.status(), result.toString());
        return result;
    }

    private static String[] withBootstrap(String... args) {
        List<String> all = new ArrayList<>(List.of("--bootstrap-server", broker.bootstrap()));
        all.addAll(Arrays.asList(args));
        return all.toArray(new String[0]);
    }

    private static Tool.Result topics(String... args) {
        return ok(Tool.TOPICS, null, withBootstrap(args));
    }

    private static Tool.Result groups(String... args) {
        return ok(Tool.CONSUMER_GROUPS, null, withBootstrap(args));
    }

    private static Tool.Result configs(String... args) {
        return ok(Tool.CONFIGS, null, withBootstrap(args));
    }

    private static List<String> lines(String text) {
        List<String> lines = new ArrayList<>();
        for (String line : text.split("\n")) {
            if (!line.isBlank()) {
                lines.add(line.trim());
            }
        }
        return lines;
    }

    /**
     * The cells of the table row that starts with the `prefix` cells, up to the next row: read as
     * whitespace-separated tokens of the whole output (the 3.9 reset-offsets table prints its rows
     * without line breaks between them).
     */
    private static List<String> row(Tool.Result result, String... prefix) {
        List<String> tokens = Arrays.asList(result.out().trim().split("\\s+"));
        for (int i = 0; i + prefix.length <= tokens.size(); i++) {
            if (tokens.subList(i, i + prefix.length).equals(Arrays.asList(prefix))) {
                return tokens.subList(i, tokens.size());
            }
        }
        throw new AssertionError("no row " + Arrays.toString(prefix) + " in\n" + result);
    }

    @Test
    void kafkaTopicsCreateListDescribeAlterDelete() {
        String topic = "cli-topic";
        Tool.Result created = topics("--create", "--topic", topic, "--partitions", "2", "--replication-factor", "1",
                "--config", "retention.ms=86400000");
        assertTrue(created.out().contains("Created topic " + topic + "."), created.toString());

        Tool.Result exists = Tool.run(Tool.TOPICS, null, withBootstrap("--create", "--topic", topic, "--partitions", "1"));
        assertNotEquals(0, exists.status(), exists.toString());
        assertTrue((exists.out() + exists.err()).contains("already exists"), exists.toString());

        assertTrue(lines(topics("--list").out()).contains(topic));

        Tool.Result described = topics("--describe", "--topic", topic);
        String summary = lines(described.out()).get(0);
        assertTrue(summary.contains("Topic: " + topic) && summary.contains("PartitionCount: 2")
                && summary.contains("ReplicationFactor: 1") && summary.contains("retention.ms=86400000"), described.toString());
        assertTrue(described.out().contains("Partition: 0") && described.out().contains("Partition: 1"), described.toString());
        assertTrue(described.out().contains("Leader: 0"), described.toString());

        topics("--alter", "--topic", topic, "--partitions", "4");
        waitFor("4 partitions", () -> topics("--describe", "--topic", topic).out().contains("PartitionCount: 4"),
                Duration.ofSeconds(15));

        topics("--delete", "--topic", topic);
        waitFor(topic + " gone from --list", () -> !lines(topics("--list").out()).contains(topic), Duration.ofSeconds(15));
    }

    @Test
    void consoleProducerConsumerAndConsumerGroupsDescribeAndResetOffsets() {
        String topic = "cli-console";
        String group = "cli-group";
        topics("--create", "--topic", topic, "--partitions", "1", "--replication-factor", "1");

        ok(Tool.CONSOLE_PRODUCER, "a:1\nb:2\nc:3\n", withBootstrap("--topic", topic,
                "--property", "parse.key=true", "--property", "key.separator=:",
                "--producer-property", "acks=all", "--compression-codec", "lz4"));

        // kafka-get-offsets: latest, earliest, max-timestamp.
        assertEquals(List.of(topic + ":0:3"), lines(ok(Tool.GET_OFFSETS, null, withBootstrap("--topic", topic, "--time", "-1")).out()));
        assertEquals(List.of(topic + ":0:0"), lines(ok(Tool.GET_OFFSETS, null, withBootstrap("--topic", topic, "--time", "-2")).out()));

        Tool.Result consumed = ok(Tool.CONSOLE_CONSUMER, null, withBootstrap("--topic", topic, "--group", group,
                "--from-beginning", "--max-messages", "3", "--timeout-ms", "20000",
                "--property", "print.key=true", "--property", "key.separator=:"));
        assertEquals(List.of("a:1", "b:2", "c:3"), lines(consumed.out()), consumed.toString());
        assertTrue(consumed.err().contains("Processed a total of 3 messages"), consumed.toString());

        assertTrue(lines(groups("--list").out()).contains(group));
        Tool.Result members = groups("--describe", "--group", group, "--members");
        assertTrue((members.out() + members.err()).contains("has no active members"), members.toString());

        // The console consumer committed on exit: no lag.
        Tool.Result described = groups("--describe", "--group", group);
        List<String> partition0 = row(described, group, topic, "0");
        assertEquals("3", partition0.get(3), "CURRENT-OFFSET\n" + described);
        assertEquals("3", partition0.get(4), "LOG-END-OFFSET\n" + described);
        assertEquals("0", partition0.get(5), "LAG\n" + described);

        Tool.Result dryRun = groups("--reset-offsets", "--group", group, "--topic", topic, "--to-offset", "1", "--dry-run");
        assertEquals("1", row(dryRun, group, topic, "0").get(3), dryRun.toString());
        assertEquals("3", row(groups("--describe", "--group", group), group, topic, "0").get(3), "a dry run changes nothing");

        Tool.Result reset = groups("--reset-offsets", "--group", group, "--topic", topic, "--to-earliest", "--execute");
        assertEquals("0", row(reset, group, topic, "0").get(3), reset.toString());
        described = groups("--describe", "--group", group);
        assertEquals("0", row(described, group, topic, "0").get(3), described.toString());
        assertEquals("3", row(described, group, topic, "0").get(5), "LAG\n" + described);

        Tool.Result state = groups("--describe", "--group", group, "--state");
        assertTrue(state.out().contains("Empty"), state.toString());

        // Reading again from the reset offset: all three records.
        Tool.Result again = ok(Tool.CONSOLE_CONSUMER, null, withBootstrap("--topic", topic, "--group", group,
                "--max-messages", "3", "--timeout-ms", "20000"));
        assertEquals(List.of("1", "2", "3"), lines(again.out()), again.toString());

        Tool.Result deleted = groups("--delete", "--group", group);
        assertTrue(deleted.out().contains("successful"), deleted.toString());
        assertFalse(lines(groups("--list").out()).contains(group));
    }

    @Test
    void kafkaDeleteRecordsMovesTheLogStartOffset() throws Exception {
        String topic = "cli-delete-records";
        topics("--create", "--topic", topic, "--partitions", "1", "--replication-factor", "1");
        ok(Tool.CONSOLE_PRODUCER, "a\nb\nc\nd\ne\nf\n", withBootstrap("--topic", topic, "--producer-property", "acks=all"));
        java.nio.file.Path offsets = java.nio.file.Files.createTempFile("delete-records", ".json");
        java.nio.file.Files.writeString(offsets,
                "{\"partitions\": [{\"topic\": \"" + topic + "\", \"partition\": 0, \"offset\": 4}], \"version\": 1}");
        Tool.Result deleted = ok(Tool.DELETE_RECORDS, null, withBootstrap("--offset-json-file", offsets.toString()));
        java.nio.file.Files.delete(offsets);
        assertTrue(deleted.out().contains("partition: " + topic + "-0\tlow_watermark: 4"), deleted.toString());
        assertEquals(List.of(topic + ":0:4"), lines(ok(Tool.GET_OFFSETS, null, withBootstrap("--topic", topic, "--time", "-2")).out()));
        Tool.Result consumed = ok(Tool.CONSOLE_CONSUMER, null, withBootstrap("--topic", topic,
                "--from-beginning", "--max-messages", "2", "--timeout-ms", "20000"));
        assertEquals(List.of("e", "f"), lines(consumed.out()), consumed.toString());
    }

    @Test
    void kafkaConfigsAlterDescribeAndDelete() {
        String topic = "cli-configs";
        topics("--create", "--topic", topic, "--partitions", "1", "--replication-factor", "1");
        Tool.Result altered = configs("--entity-type", "topics", "--entity-name", topic,
                "--alter", "--add-config", "retention.ms=1000000,max.message.bytes=2000000");
        assertTrue(altered.out().contains("Completed updating config for topic " + topic), altered.toString());

        Tool.Result described = configs("--entity-type", "topics", "--entity-name", topic, "--describe");
        assertTrue(described.out().contains("retention.ms=1000000"), described.toString());
        assertTrue(described.out().contains("max.message.bytes=2000000"), described.toString());

        configs("--entity-type", "topics", "--entity-name", topic, "--alter", "--delete-config", "retention.ms");
        described = configs("--entity-type", "topics", "--entity-name", topic, "--describe");
        assertFalse(described.out().contains("retention.ms="), described.toString());
        assertTrue(described.out().contains("max.message.bytes=2000000"), described.toString());

        Tool.Result all = configs("--entity-type", "topics", "--entity-name", topic, "--describe", "--all");
        assertTrue(all.out().contains("retention.ms=604800000"), all.toString());
        assertTrue(all.out().contains("cleanup.policy=delete"), all.toString());

        Tool.Result brokerConfigs = configs("--entity-type", "brokers", "--entity-name", "0", "--describe", "--all");
        assertTrue(brokerConfigs.out().contains("All configs for broker 0 are:"), brokerConfigs.toString());
        assertTrue(lines(brokerConfigs.out()).size() > 1, brokerConfigs.toString());

        Tool.Result invalid = Tool.run(Tool.CONFIGS, null, withBootstrap("--entity-type", "topics", "--entity-name", topic,
                "--alter", "--add-config", "retention.ms=soon"));
        assertNotEquals(0, invalid.status(), invalid.toString());
    }
}
