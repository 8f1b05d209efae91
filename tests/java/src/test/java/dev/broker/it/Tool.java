package dev.broker.it;

import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.InputStream;
import java.io.PrintStream;
import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Method;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import org.apache.kafka.common.utils.Exit;

/**
 * Runs one of Kafka's CLI tools (what bin/kafka-*.sh start) through its main class from the
 * Maven jars, in this JVM: the tools end through Kafka's Exit, whose exit and halt procedures are
 * replaced here by an exception carrying the status, so they never call System.exit. Captures
 * stdout and stderr, feeds stdin.
 */
final class Tool {
    /** kafka-topics.sh */
    static final String[] TOPICS = {"org.apache.kafka.tools.TopicCommand", "kafka.admin.TopicCommand"};
    /** kafka-console-producer.sh */
    static final String[] CONSOLE_PRODUCER = {"org.apache.kafka.tools.ConsoleProducer", "kafka.tools.ConsoleProducer"};
    /** kafka-console-consumer.sh */
    static final String[] CONSOLE_CONSUMER = {"org.apache.kafka.tools.consumer.ConsoleConsumer", "kafka.tools.ConsoleConsumer"};
    /** kafka-consumer-groups.sh */
    static final String[] CONSUMER_GROUPS = {"org.apache.kafka.tools.consumer.group.ConsumerGroupCommand", "kafka.admin.ConsumerGroupCommand"};
    /** kafka-configs.sh */
    static final String[] CONFIGS = {"org.apache.kafka.tools.ConfigCommand", "kafka.admin.ConfigCommand"};

    /** kafka-get-offsets.sh */
    static final String[] GET_OFFSETS = {"org.apache.kafka.tools.GetOffsetShell", "kafka.tools.GetOffsetShell"};
    /** kafka-delete-records.sh */
    static final String[] DELETE_RECORDS = {"org.apache.kafka.tools.DeleteRecordsCommand", "kafka.admin.DeleteRecordsCommand"};

    record Result(String tool, List<String> args, int status, String out, String err) {
        @Override
        public String toString() {
            return tool + " " + String.join(" ", args) + " -> exit " + status + "\n--- stdout ---\n" + out + "--- stderr ---\n" + err;
        }
    }

    private static final class Wrapped extends RuntimeException {
        Wrapped(Exception cause) {
            super(cause);
        }
    }

    private static final class Exited extends RuntimeException {
        final int status;

        Exited(int status, String message) {
            super("exit " + status + (message == null ? "" : ": " + message), null, false, false);
            this.status = status;
        }
    }

    static Result run(String[] classNames, String stdin, String... args) {
        Method main = mainOf(classNames);
        PrintStream oldOut = System.out;
        PrintStream oldErr = System.err;
        InputStream oldIn = System.in;
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        ByteArrayOutputStream err = new ByteArrayOutputStream();
        int[] firstExit = {Integer.MIN_VALUE};
        Exit.Procedure procedure = (status, message) -> {
            if (firstExit[0] == Integer.MIN_VALUE) {
                firstExit[0] = status;
            }
            throw new Exited(status, message);
        };
        int status;
        synchronized (Tool.class) {
            Exit.setExitProcedure(procedure);
            Exit.setHaltProcedure(procedure);
            // Tools register shutdown hooks (e.g. to close their consumer): not in a test JVM.
            Exit.setShutdownHookAdder((name, runnable) -> { });
            System.setOut(new PrintStream(out, true, StandardCharsets.UTF_8));
            System.setErr(new PrintStream(err, true, StandardCharsets.UTF_8));
            System.setIn(new ByteArrayInputStream((stdin == null ? "" : stdin).getBytes(StandardCharsets.UTF_8)));
            PrintStream toolOut = System.out;
            PrintStream toolErr = System.err;
            try {
                // Scala tools print through scala.Console, whose streams do not follow System.setOut.
                scala.Console.withOut(toolOut, (scala.Function0<Object>) () ->
                        scala.Console.withErr(toolErr, (scala.Function0<Object>) () -> {
                            try {
                                return main.invoke(null, (Object) args);
                            } catch (IllegalAccessException | InvocationTargetException e) {
                                throw new Wrapped(e);
                            }
                        }));
                status = 0;
            } catch (Wrapped wrapped) {
                if (wrapped.getCause() instanceof InvocationTargetException e) {
                    if (firstExit[0] != Integer.MIN_VALUE) {
                        status = firstExit[0];
                    } else {
                        e.getCause().printStackTrace();
                        status = -1;
                    }
                } else {
                    throw new IllegalStateException(wrapped.getCause());
                }
            } catch (Exited e) {
                status = e.status;
            } finally {
                System.out.flush();
                System.err.flush();
                System.setOut(oldOut);
                System.setErr(oldErr);
                System.setIn(oldIn);
                Exit.resetExitProcedure();
                Exit.resetHaltProcedure();
                Exit.resetShutdownHookAdder();
            }
        }
        if (firstExit[0] != Integer.MIN_VALUE) {
            status = firstExit[0];
        }
        return new Result(main.getDeclaringClass().getName(), List.of(args), status,
                out.toString(StandardCharsets.UTF_8), err.toString(StandardCharsets.UTF_8));
    }

    private static Method mainOf(String[] classNames) {
        List<String> tried = new ArrayList<>();
        for (String name : classNames) {
            try {
                return Class.forName(name).getMethod("main", String[].class);
            } catch (ClassNotFoundException | NoSuchMethodException e) {
                tried.add(name);
            }
        }
        throw new IllegalStateException("none of " + tried + " is in the Kafka jars");
    }

    private Tool() {}
}
