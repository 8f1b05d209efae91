#!/usr/bin/env node
// Transactions through kafkajs (issue 18), one scenario per run: `commit`, `abort`, `fence`,
// `offsets` (a consume-transform-produce loop with a consumer group and sendOffsets). Consumers
// read uncommitted (kafkajs skips the control batches), so the checks count records and the
// markers' offsets. Prints `<scenario> ok` on success; the reason on stderr and exit 1 on failure.
'use strict';
const { parseArgs } = require('node:util');
const { Kafka, logLevel } = require('kafkajs');

const TIMEOUT_MS = 60_000;

class Failure extends Error {}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function check(condition, message) {
  if (!condition) throw new Failure(message);
}

async function endOffset(admin, topic) {
  const offsets = await admin.fetchTopicOffsets(topic);
  return offsets.reduce((sum, p) => sum + Number(p.high), 0);
}

/// Every value of `topic` (read uncommitted unless `readCommitted`), once `count` are there.
async function readAll(kafka, topic, count, groupId, readCommitted = false) {
  const consumer = kafka.consumer({ groupId, readUncommitted: !readCommitted, sessionTimeout: 6000, heartbeatInterval: 500 });
  const values = [];
  await consumer.connect();
  await consumer.subscribe({ topics: [topic], fromBeginning: true });
  await consumer.run({ eachMessage: async ({ message }) => { values.push(message.value.toString()); } });
  const deadline = Date.now() + TIMEOUT_MS;
  while (values.length < count && Date.now() < deadline) await sleep(50);
  await sleep(300); // any extra record would show now
  await consumer.disconnect();
  return values;
}

async function transactionalProducer(kafka, transactionalId) {
  const producer = kafka.producer({ transactionalId, idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  return producer;
}

async function commitAndAbort(kafka, admin, topic, scenario) {
  const producer = await transactionalProducer(kafka, `${topic}-txn`);
  if (scenario === 'abort') {
    const aborted = await producer.transaction();
    await aborted.send({ topic, messages: [0, 1, 2, 3, 4].map((i) => ({ value: `aborted-${i}` })) });
    await aborted.abort();
  }
  const txn = await producer.transaction();
  await txn.send({ topic, messages: [0, 1, 2].map((i) => ({ value: `committed-${i}` })) });
  await txn.commit();
  await producer.disconnect();
  const expectedEnd = scenario === 'abort' ? 5 + 1 + 3 + 1 : 3 + 1; // records and markers
  check((await endOffset(admin, topic)) === expectedEnd, `log end ${await endOffset(admin, topic)}, expected ${expectedEnd}`);
  const values = await readAll(kafka, topic, expectedEnd - (scenario === 'abort' ? 2 : 1), `${topic}-reader`);
  check(values.filter((v) => v.startsWith('committed-')).length === 3, `committed records: ${values}`);
  check(values.length === expectedEnd - (scenario === 'abort' ? 2 : 1), `no control record reaches the app: ${values}`);
  // read_committed: kafkajs drops the aborted records by the fetch's aborted-transactions list.
  const committedOnly = await readAll(kafka, topic, 3, `${topic}-committed-reader`, true);
  check(committedOnly.join(',') === 'committed-0,committed-1,committed-2', `read_committed sees only the committed records: ${committedOnly}`);
}

async function fence(kafka, topic) {
  const first = await transactionalProducer(kafka, `${topic}-txn`);
  const txn = await first.transaction();
  await txn.send({ topic, messages: [{ value: 'zombie' }] });
  const second = await transactionalProducer(kafka, `${topic}-txn`);
  // kafkajs's connect takes an idempotent id; its first transaction() does the transactional
  // InitProducerId, which bumps the epoch: the first producer is fenced.
  const next = await second.transaction();
  let fenced = null;
  try {
    await txn.send({ topic, messages: [{ value: 'zombie-2' }] });
    await txn.commit();
  } catch (e) {
    fenced = e;
  }
  check(fenced !== null, 'the first producer was not fenced');
  const type = fenced.type || (fenced.cause && fenced.cause.type) || fenced.name;
  console.log(`fact fenced_error=${type}`);
  await next.send({ topic, messages: [{ value: 'winner' }] });
  await next.commit();
  await second.disconnect();
  await first.disconnect().catch(() => {});
}

async function offsets(kafka, admin, topic) {
  const input = `${topic}-in`;
  const output = `${topic}-out`;
  const groupId = `${topic}-ctp`;
  const total = 30;
  await admin.createTopics({ topics: [{ topic: input, numPartitions: 3 }, { topic: output, numPartitions: 2 }], waitForLeaders: true });
  const plain = kafka.producer();
  await plain.connect();
  await plain.send({ topic: input, acks: -1, messages: Array.from({ length: total }, (_, i) => ({ key: `k${i}`, value: `in-${i}` })) });
  await plain.disconnect();

  const producer = await transactionalProducer(kafka, `${topic}-ctp-txn`);
  const consumer = kafka.consumer({ groupId, readUncommitted: false, sessionTimeout: 6000, heartbeatInterval: 500 });
  await consumer.connect();
  await consumer.subscribe({ topics: [input], fromBeginning: true });
  let transformed = 0;
  await consumer.run({
    autoCommit: false,
    eachBatch: async ({ batch }) => {
      const txn = await producer.transaction();
      try {
        await txn.send({ topic: output, messages: batch.messages.map((m) => ({ key: m.key, value: `out-${m.value.toString()}` })) });
        const next = (Number(batch.messages[batch.messages.length - 1].offset) + 1).toString();
        await txn.sendOffsets({ consumerGroupId: groupId, topics: [{ topic: input, partitions: [{ partition: batch.partition, offset: next }] }] });
        await txn.commit();
        transformed += batch.messages.length;
      } catch (e) {
        await txn.abort().catch(() => {});
        throw e;
      }
    },
  });
  const deadline = Date.now() + TIMEOUT_MS;
  while (transformed < total && Date.now() < deadline) await sleep(50);
  await consumer.disconnect();
  await producer.disconnect();
  check(transformed === total, `transformed ${transformed} of ${total}`);
  const committed = await admin.fetchOffsets({ groupId, topics: [input] });
  const sum = committed[0].partitions.reduce((s, p) => s + Number(p.offset), 0);
  check(sum === total, `the group's offsets (committed with the transactions) sum to ${sum}, expected ${total}`);
  const values = await readAll(kafka, output, total, `${topic}-out-reader`);
  check(values.length === total && new Set(values).size === total, `output once each: ${values.length} records, ${new Set(values).size} distinct`);
}

async function main() {
  const { values, positionals } = parseArgs({ allowPositionals: true, options: { bootstrap: { type: 'string' }, topic: { type: 'string' } } });
  const scenario = positionals[0];
  const topic = values.topic;
  const kafka = new Kafka({ clientId: 'transactions-js', brokers: [values.bootstrap], logLevel: logLevel.NOTHING });
  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({ topics: [{ topic, numPartitions: 1 }], waitForLeaders: true });
  try {
    if (scenario === 'commit' || scenario === 'abort') await commitAndAbort(kafka, admin, topic, scenario);
    else if (scenario === 'fence') await fence(kafka, topic);
    else if (scenario === 'offsets') await offsets(kafka, admin, topic);
    else throw new Failure(`unknown scenario ${scenario}`);
  } finally {
    await admin.disconnect();
  }
  console.log(`${scenario} ok`);
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e instanceof Failure ? e.message : e.stack || e);
    process.exit(1);
  },
);
