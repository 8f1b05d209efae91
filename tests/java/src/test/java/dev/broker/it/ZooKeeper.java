package dev.broker.it;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * A standalone ZooKeeper server from Debian's package (/usr/share/java/zookeeper.jar, 3.8) as a
 * child process of the test JVM, never zkServer.sh: a free loopback port, a temp data dir, a
 * 200 ms tick (so sessions expire on 200 ms boundaries). Its log goes to
 * target/broker-logs/zookeeper-PORT.log; close() kills it and removes its data.
 */
final class ZooKeeper implements AutoCloseable {
    static final Path JAR = Paths.get("/usr/share/java/zookeeper.jar");
    private static final Duration START_TIMEOUT = Duration.ofSeconds(30);

    final int port;
    final Path dir;
    final Path logFile;
    private final Process process;
    private final Thread killOnExit;

    private ZooKeeper(int port, Path dir, Path logFile, Process process) {
        this.port = port;
        this.dir = dir;
        this.logFile = logFile;
        this.process = process;
        this.killOnExit = new Thread(process::destroyForcibly, "kill-zookeeper-" + port);
        Runtime.getRuntime().addShutdownHook(killOnExit);
    }

    static ZooKeeper start() throws IOException, InterruptedException {
        if (!Files.isReadable(JAR)) {
            throw new IllegalStateException(JAR + " is missing: apt-get install zookeeper (tests/clients/setup.sh does)");
        }
        int port = Broker.freePort();
        Path dir = Files.createTempDirectory("java-it-zookeeper-");
        Path config = dir.resolve("zoo.cfg");
        Files.writeString(config, String.join("\n",
                "tickTime=200",
                "dataDir=" + dir.resolve("data"),
                "clientPort=" + port,
                "clientPortAddress=127.0.0.1",
                "admin.enableServer=false",
                "4lw.commands.whitelist=*",
                "maxSessionTimeout=60000",
                ""));
        Path logDir = Paths.get("target", "broker-logs").toAbsolutePath();
        Files.createDirectories(logDir);
        Path logFile = logDir.resolve("zookeeper-" + port + ".log");
        Path java = Paths.get(System.getProperty("java.home"), "bin", "java");
        Process process = new ProcessBuilder(List.of(java.toString(), "-Xmx256m", "-cp", JAR.toString(),
                "org.apache.zookeeper.server.ZooKeeperServerMain", config.toString()))
                .redirectOutput(ProcessBuilder.Redirect.DISCARD)
                .redirectError(ProcessBuilder.Redirect.to(logFile.toFile()))
                .start();
        ZooKeeper server = new ZooKeeper(port, dir, logFile, process);
        try {
            long deadline = System.nanoTime() + START_TIMEOUT.toNanos();
            while (!server.isOk()) {
                if (!process.isAlive()) {
                    throw new IllegalStateException("ZooKeeper exited at start with " + process.exitValue() + ": see " + logFile);
                }
                if (System.nanoTime() > deadline) {
                    throw new IllegalStateException("ZooKeeper did not answer ruok within " + START_TIMEOUT + ": see " + logFile);
                }
                Thread.sleep(100);
            }
        } catch (RuntimeException | Error | InterruptedException e) {
            server.close();
            throw e;
        }
        return server;
    }

    /** `zookeeper.connect` for the brokers, with a chroot such as "/kafka". */
    String connect(String chroot) {
        return "127.0.0.1:" + port + chroot;
    }

    /** The four-letter ruok, with a read timeout: 3.8.0 may never answer a probe sent during start-up. */
    private boolean isOk() {
        try (Socket socket = new Socket()) {
            socket.connect(new InetSocketAddress("127.0.0.1", port), 500);
            socket.setSoTimeout(500);
            OutputStream out = socket.getOutputStream();
            out.write("ruok".getBytes(StandardCharsets.US_ASCII));
            out.flush();
            InputStream in = socket.getInputStream();
            return new String(in.readAllBytes(), StandardCharsets.US_ASCII).equals("imok");
        } catch (IOException e) {
            return false;
        }
    }

    /** Kills the server (nothing to flush: its data is thrown away) and removes its directory. */
    @Override
    public void close() {
        try {
            process.destroyForcibly();
            process.waitFor(30, TimeUnit.SECONDS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        } finally {
            try {
                Runtime.getRuntime().removeShutdownHook(killOnExit);
            } catch (IllegalStateException shuttingDown) {
                // the hook runs anyway
            }
            Broker.deleteTree(dir);
        }
    }
}
