package dev.broker.it;

import java.io.IOException;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;

/**
 * Our broker binary (target/release/broker, or the system property broker.binary) on a free
 * loopback port with its own temp data dir. Its stderr goes to target/broker-logs/NAME-PORT.log,
 * which is kept for post-mortems; the data dir is removed on stop.
 */
public final class Broker implements AutoCloseable {
    /** The line the broker logs once every shard accepts connections. */
    private static final String READY_LINE = "broker ready";
    private static final Duration START_TIMEOUT = Duration.ofSeconds(30);
    private static final Duration STOP_TIMEOUT = Duration.ofSeconds(30);

    public final int port;
    public final Path dataDir;
    public final Path logFile;
    /** The command line, kept for {@link #restart()} on the same port and data dir. */
    private final List<String> command;
    private volatile Process process;
    private final Thread killOnExit;
    /** Set by {@link #kill()}: close() then expects no clean exit. */
    private volatile boolean killed;

    private Broker(int port, Path dataDir, Path logFile, List<String> command) throws IOException {
        this.port = port;
        this.dataDir = dataDir;
        this.logFile = logFile;
        this.command = command;
        this.process = launch(ProcessBuilder.Redirect.to(logFile.toFile()));
        // A JVM that exits without running @AfterAll (e.g. killed by a timeout) still ends it.
        this.killOnExit = new Thread(() -> this.process.destroyForcibly(), "kill-broker-" + port);
        Runtime.getRuntime().addShutdownHook(killOnExit);
    }

    public static Path binary() {
        Path path = Paths.get(System.getProperty("broker.binary", "../../target/release/broker")).toAbsolutePath().normalize();
        if (!Files.isExecutable(path)) {
            throw new IllegalStateException(path + " is missing: build it first (cargo build --release -p broker)");
        }
        return path;
    }

    /** Starts a standalone broker with 2 unpinned shards and extra key=value overrides. */
    public static Broker start(String name, String... overrides) throws IOException, InterruptedException {
        return start(name, 2, overrides);
    }

    /** Starts a broker with `shards` unpinned shards and extra key=value overrides. */
    public static Broker start(String name, int shards, String... overrides) throws IOException, InterruptedException {
        int port = freePort();
        Path dataDir = Files.createTempDirectory("java-it-" + name + "-");
        Path logDir = Paths.get("target", "broker-logs").toAbsolutePath();
        Files.createDirectories(logDir);
        Path logFile = logDir.resolve(name + "-" + port + ".log");
        List<String> command = new ArrayList<>(List.of(
                binary().toString(), "--shards", Integer.toString(shards),
                "--override", "listeners=PLAINTEXT://127.0.0.1:" + port,
                "--override", "log.dirs=" + dataDir.resolve("logs"),
                // As Kafka's own integration tests: no 3 s wait before a new group's first rebalance.
                "--override", "group.initial.rebalance.delay.ms=0",
                "--override", "offsets.topic.num.partitions=4"));
        for (String override : overrides) {
            command.add("--override");
            // "{port}" is the port chosen here (a listeners override that keeps PLAINTEXT on it).
            command.add(override.replace("{port}", Integer.toString(port)));
        }
        Broker broker = new Broker(port, dataDir, logFile, command);
        try {
            broker.awaitReady(0);
        } catch (RuntimeException | Error e) {
            broker.close();
            throw e;
        }
        return broker;
    }

    private Process launch(ProcessBuilder.Redirect stderr) throws IOException {
        ProcessBuilder builder = new ProcessBuilder(command)
                .redirectOutput(ProcessBuilder.Redirect.DISCARD)
                .redirectError(stderr);
        builder.environment().put("RUST_LOG", "info,glommio=warn");
        return builder.start();
    }

    /**
     * Starts the broker again, after {@link #kill()}, on the same port and data dir (its log goes
     * on in the same file), and waits until it is ready: recovery after a crash.
     */
    public void restart() throws IOException, InterruptedException {
        if (process.isAlive()) {
            throw new IllegalStateException("restart() of a running broker: kill() it first");
        }
        int logLength = log().length();
        process = launch(ProcessBuilder.Redirect.appendTo(logFile.toFile()));
        killed = false;
        awaitReady(logLength);
    }

    public String bootstrap() {
        return "127.0.0.1:" + port;
    }

    public boolean isAlive() {
        return process.isAlive();
    }

    public String log() {
        try {
            return Files.readString(logFile, StandardCharsets.UTF_8);
        } catch (IOException e) {
            return "(no log: " + e + ")";
        }
    }

    /** The last lines of the broker's log, for assertion messages. */
    public String logTail(int lines) {
        String[] all = log().split("\n");
        StringBuilder out = new StringBuilder("--- " + logFile + " (last " + lines + " lines) ---\n");
        for (int i = Math.max(0, all.length - lines); i < all.length; i++) {
            out.append(all[i]).append('\n');
        }
        return out.toString();
    }

    /** Waits for the ready line after the log's first `fromChar` characters, and a connection. */
    private void awaitReady(int fromChar) throws InterruptedException {
        long deadline = System.nanoTime() + START_TIMEOUT.toNanos();
        while (!log().substring(Math.min(fromChar, log().length())).contains(READY_LINE) || !accepts()) {
            if (!process.isAlive()) {
                throw new IllegalStateException("broker exited at start with " + process.exitValue() + "\n" + logTail(40));
            }
            if (System.nanoTime() > deadline) {
                throw new IllegalStateException("broker not ready within " + START_TIMEOUT + "\n" + logTail(40));
            }
            Thread.sleep(20);
        }
    }

    private boolean accepts() {
        try (Socket socket = new Socket()) {
            socket.connect(new InetSocketAddress("127.0.0.1", port), 500);
            return true;
        } catch (IOException e) {
            return false;
        }
    }

    /** SIGKILL (a crash, as `kill -9`), and waits for the process to end; close() still cleans up. */
    public void kill() throws InterruptedException {
        killed = true;
        process.destroyForcibly();
        if (!process.waitFor(STOP_TIMEOUT.toMillis(), TimeUnit.MILLISECONDS)) {
            throw new IllegalStateException("broker still running " + STOP_TIMEOUT + " after SIGKILL");
        }
    }

    /** SIGTERM, then SIGKILL if it has not exited within 30 s; removes the data dir. */
    @Override
    public void close() {
        try {
            if (killed) {
                process.destroyForcibly();
                process.waitFor(STOP_TIMEOUT.toMillis(), TimeUnit.MILLISECONDS);
                return;
            }
            process.destroy();
            if (!process.waitFor(STOP_TIMEOUT.toMillis(), TimeUnit.MILLISECONDS)) {
                process.destroyForcibly();
                process.waitFor(STOP_TIMEOUT.toMillis(), TimeUnit.MILLISECONDS);
                throw new IllegalStateException("broker did not stop within " + STOP_TIMEOUT + " of SIGTERM\n" + logTail(40));
            }
            if (process.exitValue() != 0) {
                throw new IllegalStateException("broker exited with " + process.exitValue() + " on SIGTERM\n" + logTail(40));
            }
        } catch (InterruptedException e) {
            process.destroyForcibly();
            Thread.currentThread().interrupt();
        } finally {
            try {
                Runtime.getRuntime().removeShutdownHook(killOnExit);
            } catch (IllegalStateException shuttingDown) {
                // the hook runs anyway
            }
            deleteTree(dataDir);
        }
    }

    static int freePort() throws IOException {
        try (ServerSocket socket = new ServerSocket(0, 1, java.net.InetAddress.getLoopbackAddress())) {
            return socket.getLocalPort();
        }
    }

    static void deleteTree(Path root) {
        if (!Files.exists(root)) {
            return;
        }
        try (Stream<Path> paths = Files.walk(root)) {
            paths.sorted(Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
        } catch (IOException ignored) {
            // best effort
        }
    }
}
