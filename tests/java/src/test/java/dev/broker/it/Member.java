package dev.broker.it;

import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.List;
import java.util.Set;
import java.util.TreeSet;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.atomic.AtomicReference;
import org.apache.kafka.clients.consumer.ConsumerRebalanceListener;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.TopicPartition;

/**
 * A group member polling on its own thread (a KafkaConsumer is single-threaded: it is created,
 * polled and closed there). Records what it receives and every assignment change.
 */
final class Member implements AutoCloseable {
    final String name;
    final Set<TopicPartition> owned = ConcurrentHashMap.newKeySet();
    final ConcurrentLinkedQueue<ConsumerRecord<String, String>> records = new ConcurrentLinkedQueue<>();
    /** Every partition ever revoked from this member, in order (eager revokes all at each rebalance). */
    final List<TopicPartition> revoked = java.util.Collections.synchronizedList(new ArrayList<>());
    final AtomicReference<Throwable> failure = new AtomicReference<>();
    private volatile int generation = -1;
    private volatile boolean stopping;
    private final KafkaConsumer<String, String> consumer;
    private final Thread thread;

    Member(String name, KafkaConsumer<String, String> consumer, Collection<String> topics) {
        this.name = name;
        this.consumer = consumer;
        this.thread = new Thread(() -> run(topics), "member-" + name);
        thread.setDaemon(true);
        thread.start();
    }

    private void run(Collection<String> topics) {
        try {
            consumer.subscribe(topics, new ConsumerRebalanceListener() {
                @Override
                public void onPartitionsRevoked(Collection<TopicPartition> partitions) {
                    owned.removeAll(partitions);
                    revoked.addAll(partitions);
                }

                @Override
                public void onPartitionsAssigned(Collection<TopicPartition> partitions) {
                    owned.addAll(partitions);
                    generation = consumer.groupMetadata().generationId();
                }

                @Override
                public void onPartitionsLost(Collection<TopicPartition> partitions) {
                    owned.removeAll(partitions);
                    revoked.addAll(partitions);
                }
            });
            while (!stopping) {
                consumer.poll(Duration.ofMillis(100)).forEach(records::add);
            }
        } catch (Throwable e) {
            failure.set(e);
        } finally {
            consumer.close(Duration.ofSeconds(10));
        }
    }

    int generation() {
        return generation;
    }

    Set<Integer> ownedPartitions() {
        Set<Integer> partitions = new TreeSet<>();
        owned.forEach(tp -> partitions.add(tp.partition()));
        return partitions;
    }

    @Override
    public String toString() {
        return name + " owns " + ownedPartitions() + ", generation " + generation + ", " + records.size() + " records"
                + (failure.get() == null ? "" : ", failed: " + failure.get());
    }

    /** Stops polling and closes the consumer (a dynamic member leaves the group; a static one does not). */
    @Override
    public void close() throws InterruptedException {
        stopping = true;
        thread.join(20_000);
    }
}
