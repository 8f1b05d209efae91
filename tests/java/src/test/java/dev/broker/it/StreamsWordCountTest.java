package dev.broker.it;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.ConcurrentHashMap;
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
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.Produced;
import org.junit.jupiter.api.Test;

/** Kafka Streams' word count (at_least_once) reading and writing our broker. */
class StreamsWordCountTest extends BrokerTestBase {
    private static final String[] LINES = {
        "the quick brown fox", "jumps over the lazy dog", "The dog barks", "the fox runs", "quick quick QUICK",
    };

    @Test
    void wordCountAtLeastOnce() throws Exception {
        String input = "streams-input";
        String output = "streams-output";
        createTopic(input, 2);
        createTopic(output, 2);
        Map<String, Long> expected = new HashMap<>();
        int rounds = 20;
        for (int round = 0; round < rounds; round++) {
            for (String line : LINES) {
                for (String word : line.toLowerCase(Locale.ROOT).split(" ")) {
                    expected.merge(word, 1L, Long::sum);
                }
            }
        }

        StreamsBuilder builder = new StreamsBuilder();
        builder.stream(input, Consumed.with(Serdes.String(), Serdes.String()))
                .flatMapValues(line -> Arrays.asList(line.toLowerCase(Locale.ROOT).split("\\W+")))
                .groupBy((key, word) -> word, Grouped.with(Serdes.String(), Serdes.String()))
                .count()
                .toStream()
                .to(output, Produced.with(Serdes.String(), Serdes.Long()));

        Path stateDir = Files.createTempDirectory("streams-state-");
        Properties props = streamsProps("wordcount-it", StreamsConfig.AT_LEAST_ONCE, stateDir, 200);

        AtomicReference<Throwable> streamsError = new AtomicReference<>();
        Map<String, Long> counts = new ConcurrentHashMap<>();
        try (KafkaStreams streams = new KafkaStreams(builder.build(), props)) {
            streams.setUncaughtExceptionHandler(e -> {
                streamsError.set(e);
                return org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
            });
            streams.start();
            waitFor("streams RUNNING", () -> streams.state() == KafkaStreams.State.RUNNING || streamsError.get() != null,
                    Duration.ofSeconds(45), () -> "state " + streams.state());
            assertEquals(null, streamsError.get());

            try (KafkaProducer<String, String> producer = producer(Map.of(ProducerConfig.ACKS_CONFIG, "all"))) {
                int n = 0;
                for (int round = 0; round < rounds; round++) {
                    for (String line : LINES) {
                        producer.send(new ProducerRecord<>(input, "line-" + n++, line));
                    }
                }
                producer.flush();
            }

            Properties consumerProps = consumerProps(null);
            consumerProps.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, LongDeserializer.class.getName());
            consumerProps.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
            try (KafkaConsumer<String, Long> consumer = new KafkaConsumer<>(consumerProps)) {
                List<TopicPartition> partitions = List.of(new TopicPartition(output, 0), new TopicPartition(output, 1));
                consumer.assign(partitions);
                consumer.seekToBeginning(partitions);
                // The table's latest value per word (at_least_once may repeat an update, never lose one).
                waitFor("word counts", () -> {
                    for (ConsumerRecord<String, Long> record : consumer.poll(Duration.ofMillis(200))) {
                        counts.put(record.key(), record.value());
                    }
                    return counts.equals(expected) || streamsError.get() != null;
                }, Duration.ofSeconds(60), () -> "counts " + counts + ", expected " + expected + ", streams " + streams.state());
            }
            assertEquals(null, streamsError.get());
            assertEquals(expected, counts);
            streams.close(Duration.ofSeconds(20));
        } finally {
            Broker.deleteTree(stateDir);
        }
    }
}
