package dev.broker.it;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.DescribeClusterOptions;
import org.apache.kafka.clients.admin.DescribeTopicsOptions;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.common.acl.AclOperation;
import org.junit.jupiter.api.Test;

/**
 * Kafka's own kafka-acls tool (kafka.admin.AclCommand, --bootstrap-server mode) adding, listing
 * and removing ACLs on a broker with an authorizer, and the Java AdminClient's KIP-430 answers.
 * The tool and the admin connect over PLAINTEXT as User:ANONYMOUS, a super user here.
 */
class AclToolTest {
    private static final String[] ACLS = {"kafka.admin.AclCommand"};

    @Test
    void kafkaAclsAddsListsAndRemovesAndTheAdminClientSeesOperations() throws Exception {
        try (Broker broker = Broker.start("AclToolTest",
                "authorizer.class.name=kafka.security.authorizer.AclAuthorizer", "super.users=User:ANONYMOUS");
             Admin admin = Admin.create(Map.of(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, broker.bootstrap()))) {
            admin.createTopics(List.of(new NewTopic("orders", 1, (short) 1))).all().get(30, TimeUnit.SECONDS);
            Tool.Result added = Tool.run(ACLS, null, "--bootstrap-server", broker.bootstrap(), "--add",
                    "--allow-principal", "User:alice", "--operation", "Read", "--operation", "Write", "--topic", "orders");
            assertEquals(0, added.status(), added.toString());
            Tool.Result prefixed = Tool.run(ACLS, null, "--bootstrap-server", broker.bootstrap(), "--add",
                    "--deny-principal", "User:bob", "--operation", "All", "--group", "app-", "--resource-pattern-type", "prefixed");
            assertEquals(0, prefixed.status(), prefixed.toString());
            Tool.Result listed = Tool.run(ACLS, null, "--bootstrap-server", broker.bootstrap(), "--list");
            assertEquals(0, listed.status(), listed.toString());
            String out = listed.out();
            assertTrue(out.contains("ResourcePattern(resourceType=TOPIC, name=orders, patternType=LITERAL)"), listed.toString());
            assertTrue(out.contains("(principal=User:alice, host=*, operation=READ, permissionType=ALLOW)"), listed.toString());
            assertTrue(out.contains("(principal=User:alice, host=*, operation=WRITE, permissionType=ALLOW)"), listed.toString());
            assertTrue(out.contains("ResourcePattern(resourceType=GROUP, name=app-, patternType=PREFIXED)"), listed.toString());
            assertTrue(out.contains("(principal=User:bob, host=*, operation=ALL, permissionType=DENY)"), listed.toString());
            Tool.Result removed = Tool.run(ACLS, null, "--bootstrap-server", broker.bootstrap(), "--remove", "--force",
                    "--allow-principal", "User:alice", "--operation", "Write", "--topic", "orders");
            assertEquals(0, removed.status(), removed.toString());
            Tool.Result after = Tool.run(ACLS, null, "--bootstrap-server", broker.bootstrap(), "--list", "--topic", "orders");
            assertTrue(after.out().contains("operation=READ") && !after.out().contains("operation=WRITE"), after.toString());
            // KIP-430: a super user holds every operation of the cluster and of a topic.
            Set<AclOperation> cluster = admin.describeCluster(new DescribeClusterOptions().includeAuthorizedOperations(true))
                    .authorizedOperations().get(30, TimeUnit.SECONDS);
            assertEquals(Set.of(AclOperation.CREATE, AclOperation.CLUSTER_ACTION, AclOperation.DESCRIBE_CONFIGS, AclOperation.ALTER_CONFIGS,
                    AclOperation.IDEMPOTENT_WRITE, AclOperation.ALTER, AclOperation.DESCRIBE), cluster);
            Set<AclOperation> topic = admin.describeTopics(List.of("orders"), new DescribeTopicsOptions().includeAuthorizedOperations(true))
                    .allTopicNames().get(30, TimeUnit.SECONDS).get("orders").authorizedOperations();
            assertTrue(topic.containsAll(Set.of(AclOperation.READ, AclOperation.WRITE, AclOperation.DELETE, AclOperation.ALTER_CONFIGS)), topic.toString());
        }
    }
}
