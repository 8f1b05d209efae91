package dev.broker.it;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.UUID;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.CommonClientConfigs;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.ScramCredentialInfo;
import org.apache.kafka.clients.admin.ScramMechanism;
import org.apache.kafka.clients.admin.UserScramCredentialUpsertion;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.errors.SaslAuthenticationException;
import org.apache.kafka.common.errors.SslAuthenticationException;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * The Java client and Kafka's CLI tools over the broker's secured listeners (issue 20), against a
 * test CA made here with the openssl CLI: SASL_SSL with PLAIN and SCRAM-SHA-512, wrong passwords
 * (SaslAuthenticationException), a client trusting another CA (SslAuthenticationException), mTLS
 * on an SSL listener with ssl.client.auth=required, and re-authentication under
 * connections.max.reauth.ms (KIP-368: the Java client re-authenticates before its session ends).
 */
@Timeout(120)
class SecurityTest {
    private static final String JAAS = "org.apache.kafka.common.security.plain.PlainLoginModule required "
            + "username=\"admin\" password=\"admin-secret\" user_admin=\"admin-secret\" user_alice=\"alice-secret\";";
    /** Short enough that a few seconds of producing span several sessions. */
    private static final int REAUTH_MS = 2_000;

    private static Path certs;
    private static int sslPort;
    private static int saslSslPort;
    private static Broker broker;

    private static void openssl(String... args) throws IOException, InterruptedException {
        List<String> command = new ArrayList<>(List.of("openssl"));
        command.addAll(List.of(args));
        Process process = new ProcessBuilder(command).directory(certs.toFile()).redirectErrorStream(true).start();
        String output = new String(process.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        assertTrue(process.waitFor(30, TimeUnit.SECONDS) && process.exitValue() == 0, "openssl " + command + ": " + output);
    }

    /** A CA, another CA, a broker certificate for 127.0.0.1 and a client one for CN=alice,OU=eng. */
    private static void makeCerts() throws IOException, InterruptedException {
        certs = Files.createTempDirectory("java-it-certs-");
        String[] ec = {"-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"};
        for (String ca : List.of("ca", "other-ca")) {
            List<String> args = new ArrayList<>(List.of("req", "-x509"));
            args.addAll(List.of(ec));
            args.addAll(List.of("-keyout", ca + ".key", "-out", ca + ".crt", "-days", "2", "-subj", "/CN=" + ca));
            openssl(args.toArray(new String[0]));
        }
        Map<String, String[]> leaves = Map.of(
                "broker", new String[] {"/CN=localhost", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"},
                "client", new String[] {"/OU=eng/CN=alice", "extendedKeyUsage=clientAuth\n"});
        for (Map.Entry<String, String[]> leaf : leaves.entrySet()) {
            String name = leaf.getKey();
            Files.writeString(certs.resolve(name + ".ext"), leaf.getValue()[1]);
            List<String> args = new ArrayList<>(List.of("req"));
            args.addAll(List.of(ec));
            args.addAll(List.of("-keyout", name + ".key", "-out", name + ".csr", "-subj", leaf.getValue()[0]));
            openssl(args.toArray(new String[0]));
            openssl("x509", "-req", "-in", name + ".csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
                    "-extfile", name + ".ext", "-out", name + ".crt");
            Files.writeString(certs.resolve(name + "-keystore.pem"),
                    Files.readString(certs.resolve(name + ".key")) + Files.readString(certs.resolve(name + ".crt")));
        }
    }

    @BeforeAll
    static void start() throws Exception {
        makeCerts();
        sslPort = Broker.freePort();
        saslSslPort = Broker.freePort();
        broker = Broker.start("SecurityTest", 1,
                "listeners=PLAINTEXT://127.0.0.1:{port},SSL://127.0.0.1:" + sslPort + ",SASL_SSL://127.0.0.1:" + saslSslPort,
                "ssl.keystore.type=PEM",
                "ssl.keystore.location=" + certs.resolve("broker-keystore.pem"),
                "ssl.truststore.type=PEM",
                "ssl.truststore.location=" + certs.resolve("ca.crt"),
                "listener.name.ssl.ssl.client.auth=required",
                "sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-512",
                "listener.name.sasl_ssl.plain.sasl.jaas.config=" + JAAS,
                "listener.name.sasl_ssl.connections.max.reauth.ms=" + REAUTH_MS);
        try (Admin admin = Admin.create(Map.of(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, broker.bootstrap()))) {
            admin.alterUserScramCredentials(List.of(new UserScramCredentialUpsertion("bob",
                    new ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192), "bob-secret"))).all().get(30, TimeUnit.SECONDS);
        }
    }

    @AfterAll
    static void stop() throws IOException {
        if (broker != null) {
            broker.close();
        }
        if (certs != null) {
            try (var paths = Files.walk(certs)) {
                paths.sorted(java.util.Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
            }
        }
    }

    /** SASL_SSL client settings for `mechanism`, trusting `ca` (a file in the certs dir). */
    private static Properties saslSsl(String mechanism, String user, String password, String ca) {
        String module = mechanism.equals("PLAIN") ? "org.apache.kafka.common.security.plain.PlainLoginModule"
                : "org.apache.kafka.common.security.scram.ScramLoginModule";
        Properties props = new Properties();
        props.put(CommonClientConfigs.BOOTSTRAP_SERVERS_CONFIG, "127.0.0.1:" + saslSslPort);
        props.put(CommonClientConfigs.SECURITY_PROTOCOL_CONFIG, "SASL_SSL");
        props.put("sasl.mechanism", mechanism);
        props.put("sasl.jaas.config", module + " required username=\"" + user + "\" password=\"" + password + "\";");
        props.put("ssl.truststore.type", "PEM");
        props.put("ssl.truststore.location", certs.resolve(ca).toString());
        props.put(CommonClientConfigs.REQUEST_TIMEOUT_MS_CONFIG, 10_000);
        props.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, 20_000);
        return props;
    }

    /** SSL with the client's certificate (a PEM key store: its key and certificate). */
    private static Properties mutualTls() {
        Properties props = new Properties();
        props.put(CommonClientConfigs.BOOTSTRAP_SERVERS_CONFIG, "127.0.0.1:" + sslPort);
        props.put(CommonClientConfigs.SECURITY_PROTOCOL_CONFIG, "SSL");
        props.put("ssl.truststore.type", "PEM");
        props.put("ssl.truststore.location", certs.resolve("ca.crt").toString());
        props.put("ssl.keystore.type", "PEM");
        props.put("ssl.keystore.location", certs.resolve("client-keystore.pem").toString());
        props.put(CommonClientConfigs.REQUEST_TIMEOUT_MS_CONFIG, 10_000);
        return props;
    }

    /** Produces `count` records (one every `pauseMs`), then reads them back in a new group. */
    private static void roundtrip(Properties security, String topic, int count, long pauseMs) throws Exception {
        Properties producerProps = new Properties();
        producerProps.putAll(security);
        producerProps.put(ProducerConfig.ACKS_CONFIG, "all");
        producerProps.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        producerProps.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(producerProps)) {
            for (int i = 0; i < count; i++) {
                producer.send(new ProducerRecord<>(topic, "value-" + i)).get(30, TimeUnit.SECONDS);
                if (pauseMs > 0) {
                    Thread.sleep(pauseMs);
                }
            }
        }
        Properties consumerProps = new Properties();
        consumerProps.putAll(security);
        consumerProps.put(ConsumerConfig.GROUP_ID_CONFIG, "g-" + UUID.randomUUID());
        consumerProps.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        consumerProps.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        consumerProps.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        List<String> values = new ArrayList<>();
        try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(consumerProps)) {
            consumer.subscribe(List.of(topic));
            long deadline = System.nanoTime() + Duration.ofSeconds(40).toNanos();
            while (values.size() < count && System.nanoTime() < deadline) {
                for (ConsumerRecord<String, String> record : consumer.poll(Duration.ofMillis(500))) {
                    values.add(record.value());
                }
            }
        }
        List<String> expected = new ArrayList<>();
        for (int i = 0; i < count; i++) {
            expected.add("value-" + i);
        }
        assertEquals(expected, values, broker.logTail(30));
    }

    @Test
    void plainAndScramOverSaslSsl() throws Exception {
        roundtrip(saslSsl("PLAIN", "alice", "alice-secret", "ca.crt"), "java-plain", 100, 0);
        roundtrip(saslSsl("SCRAM-SHA-512", "bob", "bob-secret", "ca.crt"), "java-scram", 100, 0);
        assertTrue(broker.log().contains("principal=\"User:bob\" mechanism=\"SCRAM-SHA-512\""), broker.logTail(30));
    }

    /** The cause of a failed listTopics: the client's authentication exception. */
    private static Throwable listTopicsFailure(Properties props) {
        try (Admin admin = Admin.create(props)) {
            ExecutionException failure = assertThrows(ExecutionException.class, () -> admin.listTopics().names().get(30, TimeUnit.SECONDS));
            return failure.getCause();
        }
    }

    @Test
    void wrongPasswordsAreRefused() {
        Throwable plain = listTopicsFailure(saslSsl("PLAIN", "alice", "wrong", "ca.crt"));
        assertInstanceOf(SaslAuthenticationException.class, plain);
        assertTrue(plain.getMessage().contains("Invalid username or password"), plain.getMessage());
        Throwable scram = listTopicsFailure(saslSsl("SCRAM-SHA-512", "bob", "wrong", "ca.crt"));
        assertInstanceOf(SaslAuthenticationException.class, scram);
        assertTrue(scram.getMessage().contains("invalid credentials with SASL mechanism SCRAM-SHA-512"), scram.getMessage());
    }

    @Test
    void theBrokerCertificateIsVerifiedAgainstTheTrustStore() {
        Throwable untrusted = listTopicsFailure(saslSsl("PLAIN", "alice", "alice-secret", "other-ca.crt"));
        assertInstanceOf(SslAuthenticationException.class, untrusted);
    }

    @Test
    void mutualTlsNamesThePrincipalFromTheCertificate() throws Exception {
        roundtrip(mutualTls(), "java-mtls", 50, 0);
        assertTrue(broker.log().contains("TLS client certificate accepted principal=\"User:CN=alice,OU=eng\""), broker.logTail(30));
        // Without a key store the listener (ssl.client.auth=required) refuses the handshake.
        Properties noCertificate = mutualTls();
        noCertificate.remove("ssl.keystore.type");
        noCertificate.remove("ssl.keystore.location");
        noCertificate.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, 20_000);
        assertInstanceOf(SslAuthenticationException.class, listTopicsFailure(noCertificate));
    }

    /**
     * KIP-368: the broker answers session_lifetime_ms; the Java client re-authenticates before the
     * session ends, so a producer sending for several sessions' length keeps its connection.
     */
    @Test
    void theJavaClientReauthenticatesBeforeItsSessionEnds() throws Exception {
        roundtrip(saslSsl("SCRAM-SHA-512", "bob", "bob-secret", "ca.crt"), "java-reauth", 30, 250);
        assertTrue(broker.log().contains("reauthenticated=true"), broker.logTail(40));
        assertTrue(!broker.log().contains("SASL session expired without re-authentication"), broker.logTail(40));
    }

    /** kafka-topics and the console producer and consumer with a --command-config file. */
    @Test
    void cliToolsOverSaslSsl() throws Exception {
        Path config = certs.resolve("client.properties");
        Properties props = new Properties();
        saslSsl("PLAIN", "alice", "alice-secret", "ca.crt").forEach((key, value) -> props.put(key, String.valueOf(value)));
        props.remove(CommonClientConfigs.BOOTSTRAP_SERVERS_CONFIG);
        try (var out = Files.newBufferedWriter(config)) {
            props.store(out, "SASL_SSL for Kafka's CLI tools");
        }
        String bootstrap = "127.0.0.1:" + saslSslPort;
        Tool.Result created = Tool.run(Tool.TOPICS, null, "--bootstrap-server", bootstrap, "--command-config", config.toString(),
                "--create", "--topic", "cli-secure", "--partitions", "2", "--replication-factor", "1");
        assertEquals(0, created.status(), created.toString());
        Tool.Result listed = Tool.run(Tool.TOPICS, null, "--bootstrap-server", bootstrap, "--command-config", config.toString(), "--list");
        assertTrue(listed.out().contains("cli-secure"), listed.toString());
        Tool.Result produced = Tool.run(Tool.CONSOLE_PRODUCER, "one\ntwo\nthree\n", "--bootstrap-server", bootstrap,
                "--producer.config", config.toString(), "--topic", "cli-secure");
        assertEquals(0, produced.status(), produced.toString());
        Tool.Result consumed = Tool.run(Tool.CONSOLE_CONSUMER, null, "--bootstrap-server", bootstrap, "--consumer.config", config.toString(),
                "--topic", "cli-secure", "--from-beginning", "--max-messages", "3", "--timeout-ms", "30000");
        assertEquals(0, consumed.status(), consumed.toString());
        List<String> lines = new ArrayList<>(List.of(consumed.out().trim().split("\n")));
        lines.sort(null);
        assertEquals(List.of("one", "three", "two"), lines, consumed.toString());
    }
}
