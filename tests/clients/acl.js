#!/usr/bin/env node
// kafkajs against the broker's ACLs over SASL_SSL (tests/tests/acl_clients.rs), as
// acl_clients.py does for kafka-python and aiokafka: admin (PLAIN) is a super user and grants
// with kafkajs's admin.createAcls; bob (SCRAM-SHA-512) starts with no ACL at all.
//
//   acl.js before --bootstrap B --ca CA   makes and fills `orders` and `secret` as admin, then
//                                         walks bob from refused to granted
//   acl.js after --bootstrap B --ca CA    after the broker's restart: bob still logs in and
//                                         holds what he was granted, no more
//
// Each step prints `<step>: <outcome>`: `ok ...`, or the error's class and Kafka error name
// (`KafkaJSProtocolError TOPIC_AUTHORIZATION_FAILED`). kafkajs has no consumer without a
// group, so it has no group-less fetch step, and no commit without joining the group (its
// admin.setOffsets runs a consumer that joins).
'use strict';
const { parseArgs } = require('node:util');
const { AclOperationTypes, AclPermissionTypes, AclResourceTypes, ResourcePatternTypes, logLevel } = require('kafkajs');
const { client } = require('./security.js');

const { values: args, positionals } = parseArgs({
  allowPositionals: true,
  options: { bootstrap: { type: 'string' }, ca: { type: 'string' } },
});
const ADMIN = { mechanism: 'PLAIN', user: 'admin', password: 'admin-secret' };
const BOB = { mechanism: 'SCRAM-SHA-512', user: 'bob', password: 'bob-secret' };
const SEEDED = 3;
// Authorisation errors are not retriable; one retry keeps a wrong answer from hiding behind
// kafkajs's back-off.
const RETRY = { retries: 1 };

// kafkajs reports a refused FindCoordinator as KafkaJSGroupCoordinatorNotFound: the broker's
// error code is only in its debug log, so the log is read for it.
let logged = [];
const logCreator = () => ({ log }) => {
  if (log.error && log.error.type) logged.push(log.error.type);
};

function kafka(who) {
  return client({ bootstrap: args.bootstrap, protocol: 'SASL_SSL', ca: args.ca, ...who }, { logLevel: logLevel.DEBUG, logCreator });
}

// The KafkaJSProtocolError inside kafkajs's wrappers (KafkaJSNonRetriableError and the like),
// or the error and the last broker error kafkajs logged on the way.
function outcome(error) {
  for (let e = error; e; e = e.cause || e.originalError) {
    if (e.type) return `${e.name} ${e.type}`;
  }
  return `${error.name} (logged ${logged[logged.length - 1]})`;
}

async function using(connectable, body) {
  await connectable.connect();
  try {
    return await body(connectable);
  } finally {
    await connectable.disconnect().catch(() => {});
  }
}

async function topics(who) {
  return using(kafka(who).admin({ retry: RETRY }), async (admin) => (await admin.listTopics()).filter((t) => !t.startsWith('__')).sort().join(' '));
}

async function produce(who, topic, count = 1) {
  const messages = Array.from({ length: count }, (_, i) => ({ value: `${topic}-${i}` }));
  return using(kafka(who).producer({ retry: RETRY, allowAutoTopicCreation: false }), async (producer) => {
    await producer.send({ topic, acks: -1, messages });
    return 'ok delivered';
  });
}

// Joins the group and reads until `expected` records came (kafkajs commits them as it goes),
// or answers the error the consumer crashed with.
async function consume(who, group, topic, expected) {
  const consumer = kafka(who).consumer({ groupId: group, retry: { ...RETRY, restartOnFailure: async () => false } });
  let count = 0;
  try {
    await consumer.connect();
    await consumer.subscribe({ topic, fromBeginning: true });
    return await new Promise((resolve, reject) => {
      const timer = setTimeout(() => resolve(`ok consumed ${count} (timed out)`), 20_000);
      consumer.on(consumer.events.CRASH, ({ payload }) => {
        clearTimeout(timer);
        reject(payload.error);
      });
      consumer.run({
        eachMessage: async () => {
          count += 1;
          if (count === expected) {
            clearTimeout(timer);
            resolve(`ok consumed ${count}`);
          }
        },
      }).catch(reject);
    });
  } finally {
    await consumer.disconnect().catch(() => {});
  }
}

async function transaction(who, transactionalId, topic) {
  const producer = kafka(who).producer({ transactionalId, idempotent: true, maxInFlightRequests: 1, retry: RETRY });
  return using(producer, async () => {
    const txn = await producer.transaction();
    try {
      await txn.send({ topic, messages: [{ value: 'in-a-transaction' }] });
    } catch (e) {
      await txn.abort();
      throw e;
    }
    await txn.commit();
    return 'ok committed';
  });
}

async function grant(resourceType, resourceName, operation, pattern = 'LITERAL') {
  const acl = {
    resourceType: AclResourceTypes[resourceType],
    resourceName,
    resourcePatternType: ResourcePatternTypes[pattern],
    principal: 'User:bob',
    host: '*',
    operation: AclOperationTypes[operation],
    permissionType: AclPermissionTypes.ALLOW,
  };
  await using(kafka(ADMIN).admin(), (admin) => admin.createAcls({ acl: [acl] }));
}

async function step(name, action, ...rest) {
  logged = [];
  let result;
  try {
    result = await action(...rest);
  } catch (e) {
    result = outcome(e);
  }
  console.log(`${name}: ${result}`);
}

async function before() {
  await using(kafka(ADMIN).admin(), (admin) => admin.createTopics({ topics: ['orders', 'secret'].map((topic) => ({ topic, numPartitions: 1 })) }));
  await produce(ADMIN, 'orders', SEEDED);
  await produce(ADMIN, 'secret', SEEDED);
  // No ACL: Metadata hides both topics, so the producer learns the refusal from Metadata.
  await step('topics-none', topics, BOB);
  await step('produce-unknown', produce, BOB, 'orders');
  // DESCRIBE on orders shows it (WRITE on bob-* as the Python clients need it for their
  // idempotent producers); Produce itself now refuses orders.
  await grant('TOPIC', 'orders', 'DESCRIBE');
  await grant('TOPIC', 'bob-', 'WRITE', 'PREFIXED');
  await step('topics-describe', topics, BOB);
  await step('produce-denied', produce, BOB, 'orders');
  // No ACL on the group: FindCoordinator refuses it. DESCRIBE on it: the coordinator is found,
  // and JoinGroup refuses (it needs READ).
  await step('join-group-unknown', consume, BOB, 'bob-group', 'orders', 1);
  await grant('GROUP', 'bob-group', 'DESCRIBE');
  await step('join-group-denied', consume, BOB, 'bob-group', 'orders', 1);
  // READ on the group: it joins, and Fetch refuses the topic.
  await grant('GROUP', 'bob-group', 'READ');
  await step('group-fetch-denied', consume, BOB, 'bob-group', 'orders', 1);
  // READ and WRITE on orders: produced and consumed; secret still refused.
  await grant('TOPIC', 'orders', 'WRITE');
  await grant('TOPIC', 'orders', 'READ');
  await step('produce-granted', produce, BOB, 'orders');
  await step('consume-granted', consume, BOB, 'bob-group', 'orders', SEEDED + 1);
  await step('produce-secret', produce, BOB, 'secret');
  // Transactions: no ACL on the transactional id (FindCoordinator refuses it), DESCRIBE only
  // (InitProducerId needs WRITE), then WRITE.
  await step('transaction-unknown', transaction, BOB, 'bob-txn', 'orders');
  await grant('TRANSACTIONAL_ID', 'bob-txn', 'DESCRIBE');
  await step('transaction-denied', transaction, BOB, 'bob-txn', 'orders');
  await grant('TRANSACTIONAL_ID', 'bob-txn', 'WRITE');
  await step('transaction-granted', transaction, BOB, 'bob-txn', 'orders');
}

async function after() {
  // bob's SCRAM credentials and his ACLs came back from the data directory.
  await step('topics-after-restart', topics, BOB);
  await step('produce-after-restart', produce, BOB, 'orders');
  await step('produce-secret-after-restart', produce, BOB, 'secret');
  await step('transaction-after-restart', transaction, BOB, 'bob-txn', 'orders');
}

const command = { before, after }[positionals[0]];
if (!command) {
  console.error('usage: acl.js before|after --bootstrap B --ca CA');
  process.exit(2);
}
command().catch((e) => {
  console.error(e.stack || String(e));
  process.exit(1);
});
