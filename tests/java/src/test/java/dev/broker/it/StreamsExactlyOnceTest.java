package dev.broker.it;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.TreeMap;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReference;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.LongDeserializer;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Produced;
import org.junit.jupiter.api.Test;

/**
 * Kafka Streams exactly_once_v2 (issue 18): a count per key, its state in a changelog topic,
 * every update written to an output topic, while the broker is killed with SIGKILL mid-run (twice) and
 * restarted on the same port and data dir. Read with read_committed, each key's counts are
 * 1, 2, ..., N exactly once: no update lost, none repeated by a transaction replayed after the
 * crash (the aborted one is invisible), and the state restored from the changelog is the
 * committed one.
 */
class StreamsExactlyOnceTest extends BrokerTestBase {
    private static final int KEYS = 8;
    private static final int RECORDS_PER_KEY = 250;
    /** Broker crashes during the run, evenly spread over the counts (-Deos.kills=N to stress). */
    private static final int KILLS = Integer.getInteger("eos.kills", 2);
    private static final String CRASH_KEY = "key-3";
    private static final String CRASH_VALUE = "v150";
    private static final String DELIBERATE = "deliberate crash of the stream thread";

    @Test
    void countPerKeySurvivesABrokerKill() throws Exception {
        String input = "eos-input";
        String output = "eos-output";
        createTopic(input, 2);
        createTopic(output, 2);

        StreamsBuilder builder = new StreamsBuilder();
        // Keyed input: groupByKey needs no repartition topic, the count's changelog is the state.
        // One deliberate crash of the stream thread mid-transaction (replaced, see the handler):
        // Streams aborts the open transaction and restores the count from the changelog, which
        // must skip the aborted changelog records (read_committed with the aborted list).
        AtomicBoolean crashed = new AtomicBoolean();
        builder.stream(input, Consumed.with(Serdes.String(), Serdes.String()))
                .peek((key, value) -> {
                    if (key.equals(CRASH_KEY) && value.equals(CRASH_VALUE) && crashed.compareAndSet(false, true)) {
                        throw new IllegalStateException(DELIBERATE);
                    }
                })
                .groupByKey()
                .count()
                .toStream()
                .to(output, Produced.with(Serdes.String(), Serdes.Long()));

        Path stateDir = Files.createTempDirectory("streams-eos-state-");
        Properties props = streamsProps("eos-count-it", StreamsConfig.EXACTLY_ONCE_V2, stateDir, 100);
        // No record cache: every count update reaches the output, so the steps 1..N can be checked.
        props.put(StreamsConfig.STATESTORE_CACHE_MAX_BYTES_CONFIG, 0);
        // Reconnect soon after the restart rather than after the default backoff's growth.
        props.put(StreamsConfig.RECONNECT_BACKOFF_MAX_MS_CONFIG, 500);

        Map<String, Long> expected = new TreeMap<>();
        for (int k = 0; k < KEYS; k++) {
            expected.put("key-" + k, (long) RECORDS_PER_KEY);
        }

        AtomicReference<Throwable> streamsError = new AtomicReference<>();
        AtomicReference<Throwable> inputError = new AtomicReference<>();
        AtomicInteger sent = new AtomicInteger();
        Map<String, List<Long>> counts = new TreeMap<>();
        try (KafkaStreams streams = new KafkaStreams(builder.build(), props)) {
            streams.setUncaughtExceptionHandler(e -> {
                if (isDeliberate(e)) {
                    return StreamThreadExceptionResponse.REPLACE_THREAD;
                }
                streamsError.set(e);
                return StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
            });
            streams.start();
            waitFor("streams RUNNING", () -> streams.state() == KafkaStreams.State.RUNNING || streamsError.get() != null,
                    Duration.ofSeconds(45), () -> "state " + streams.state());
            assertEquals(null, streamsError.get());

            // The input flows while the broker goes down and comes back: an idempotent producer,
            // its sends retried across the restart, each key's records in order.
            Thread feeder = new Thread(() -> {
                try (KafkaProducer<String, String> producer = producer(Map.of(
                        ProducerConfig.ACKS_CONFIG, "all",
                        ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, true,
                        ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, 60_000,
                        ProducerConfig.RECONNECT_BACKOFF_MAX_MS_CONFIG, 500))) {
                    for (int i = 0; i < RECORDS_PER_KEY; i++) {
                        for (int k = 0; k < KEYS; k++) {
                            producer.send(new ProducerRecord<>(input, "key-" + k, "v" + i), (metadata, e) -> {
                                if (e != null) inputError.compareAndSet(null, e);
                            });
                            sent.incrementAndGet();
                        }
                        if (i % 10 == 9) {
                            producer.flush();
                            Thread.sleep(20);
                        }
                    }
                    producer.flush();
                } catch (Throwable e) {
                    inputError.compareAndSet(null, e);
                }
            }, "eos-input-feeder");
            feeder.start();

            Properties consumerProps = consumerProps(null);
            consumerProps.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, LongDeserializer.class.getName());
            consumerProps.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
            consumerProps.put(ConsumerConfig.RECONNECT_BACKOFF_MAX_MS_CONFIG, 500);
            try (KafkaConsumer<String, Long> consumer = new KafkaConsumer<>(consumerProps)) {
                List<TopicPartition> partitions = List.of(new TopicPartition(output, 0), new TopicPartition(output, 1));
                consumer.assign(partitions);
                consumer.seekToBeginning(partitions);
                AtomicInteger seen = new AtomicInteger();
                Runnable poll = () -> {
                    for (ConsumerRecord<String, Long> record : consumer.poll(Duration.ofMillis(100))) {
                        counts.computeIfAbsent(record.key(), key -> new ArrayList<>()).add(record.value());
                        seen.incrementAndGet();
                    }
                };
                // Mid-run, twice: some transactions committed, one likely open, more input coming.
                int total = KEYS * RECORDS_PER_KEY;
                for (int kill = 1; kill <= KILLS; kill++) {
                    int target = total * kill / (KILLS + 1);
                    waitFor(target + " counts", () -> {
                        poll.run();
                        return seen.get() >= target || streamsError.get() != null;
                    }, Duration.ofSeconds(30), () -> "seen " + seen + ", sent " + sent + ", streams " + streams.state());
                    assertEquals(null, streamsError.get());
                    int sentAtKill = sent.get();
                    broker.kill();
                    Thread.sleep(300);
                    broker.restart();
                    System.err.println("killed the broker at " + seen + " counts seen, " + sentAtKill + " records sent; restarted");
                }

                waitFor("every key counted to " + RECORDS_PER_KEY, () -> {
                    poll.run();
                    return finals(counts).equals(expected) || streamsError.get() != null || inputError.get() != null;
                }, Duration.ofSeconds(60), () -> "finals " + finals(counts) + ", sent " + sent + ", streams " + streams.state()
                        + ", input error " + inputError.get());
                // A little longer: a count repeated after the last one would show here.
                for (int i = 0; i < 5; i++) poll.run();
            }
            feeder.join(30_000);
            assertTrue(crashed.get(), "the stream thread crashed once");
            assertEquals(null, inputError.get(), "the input producer failed");
            assertEquals(null, streamsError.get(), "the Streams app failed");
            assertEquals(expected, finals(counts));
            for (Map.Entry<String, List<Long>> entry : counts.entrySet()) {
                List<Long> steps = new ArrayList<>();
                for (long n = 1; n <= RECORDS_PER_KEY; n++) steps.add(n);
                if (!entry.getValue().equals(steps)) {
                    fail(entry.getKey() + ": counts not exactly 1.." + RECORDS_PER_KEY + " once each: " + describe(entry.getValue()));
                }
            }
            streams.close(Duration.ofSeconds(20));
        } finally {
            Broker.deleteTree(stateDir);
        }
    }

    private static boolean isDeliberate(Throwable e) {
        for (Throwable cause = e; cause != null; cause = cause.getCause()) {
            if (DELIBERATE.equals(cause.getMessage())) return true;
        }
        return false;
    }

    private static Map<String, Long> finals(Map<String, List<Long>> counts) {
        Map<String, Long> last = new TreeMap<>();
        counts.forEach((key, values) -> last.put(key, values.get(values.size() - 1)));
        return last;
    }

    /** The first place a count sequence goes wrong, and its length. */
    private static String describe(List<Long> values) {
        Map<Long, Integer> times = new HashMap<>();
        values.forEach(v -> times.merge(v, 1, Integer::sum));
        for (int i = 0; i < values.size(); i++) {
            if (values.get(i) != i + 1) {
                return values.size() + " counts, first wrong at index " + i + ": "
                        + values.subList(Math.max(0, i - 3), Math.min(values.size(), i + 4))
                        + ", values seen twice: " + times.entrySet().stream().filter(e -> e.getValue() > 1).count();
            }
        }
        return values.size() + " counts";
    }
}
