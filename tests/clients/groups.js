#!/usr/bin/env node
// Consumer-group split through kafkajs (the same checks as `groups.py split`): P partitions,
// K consumers in one group, every partition owned by exactly one member, every record consumed
// exactly once, min(P, K) members busy. Prints `split ok` on success; the reason on stderr and
// exit 1 on failure.
'use strict';
const { parseArgs } = require('node:util');
const { Kafka, Partitioners, logLevel } = require('kafkajs');

const TIMEOUT_MS = 60_000;

class Failure extends Error {}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function waitFor(what, condition, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (condition()) return;
    await sleep(50);
  }
  throw new Failure(`timed out after ${timeoutMs / 1000}s waiting for ${what}`);
}

async function main() {
  const { values } = parseArgs({
    options: {
      bootstrap: { type: 'string' },
      topic: { type: 'string' },
      partitions: { type: 'string', default: '3' },
      members: { type: 'string', default: '4' },
    },
  });
  const partitions = Number(values.partitions);
  const memberCount = Number(values.members);
  const topic = values.topic;
  const total = partitions * 40;
  const kafka = new Kafka({ clientId: 'groups-js', brokers: [values.bootstrap], logLevel: logLevel.NOTHING });

  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({ topics: [{ topic, numPartitions: partitions, replicationFactor: 1 }], waitForLeaders: true });
  const producer = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner });
  await producer.connect();
  const messages = [];
  for (let i = 0; i < total; i++) messages.push({ key: `k${i % 23}`, value: `record-${String(i).padStart(6, '0')}` });
  await producer.send({ topic, acks: -1, messages });
  await producer.disconnect();

  const consumed = [];
  const assignments = new Array(memberCount).fill(null).map(() => []);
  const consumers = [];
  try {
    for (let m = 0; m < memberCount; m++) {
      const consumer = kafka.consumer({ groupId: `group-${topic}`, sessionTimeout: 6000, heartbeatInterval: 500 });
      consumer.on(consumer.events.GROUP_JOIN, ({ payload }) => {
        assignments[m] = (payload.memberAssignment[topic] || []).slice().sort((a, b) => a - b);
      });
      await consumer.connect();
      await consumer.subscribe({ topics: [topic], fromBeginning: true });
      consumers.push(consumer);
    }
    await Promise.all(consumers.map((consumer, m) => consumer.run({
      eachMessage: async ({ partition, message }) => {
        consumed.push({ member: m, partition, index: Number(message.value.toString().slice(7)) });
      },
    })));
    await waitFor('every record', () => consumed.length >= total, 40_000);
    await waitFor('a settled assignment', () => assignments.flat().length === partitions, 20_000);
    const owners = {};
    assignments.forEach((ps, m) => ps.forEach((p) => {
      if (p in owners) throw new Failure(`partition ${p} owned by c${owners[p] + 1} and c${m + 1}`);
      owners[p] = m;
    }));
    if (Object.keys(owners).length !== partitions) throw new Failure(`owned: ${JSON.stringify(owners)}`);
    const indexes = consumed.map((r) => r.index).sort((a, b) => a - b);
    if (indexes.length !== total || indexes.some((v, i) => v !== i)) {
      throw new Failure(`${indexes.length} records consumed for ${total} produced (duplicates or gaps)`);
    }
    for (const r of consumed) {
      if (owners[r.partition] !== r.member) throw new Failure(`c${r.member + 1} read partition ${r.partition} it does not own`);
    }
    const busy = assignments.filter((ps) => ps.length > 0);
    if (busy.length !== Math.min(partitions, memberCount)) throw new Failure(`${busy.length} busy members: ${JSON.stringify(assignments)}`);
    const sizes = busy.map((ps) => ps.length);
    if (Math.max(...sizes) - Math.min(...sizes) > 1) throw new Failure(`uneven: ${JSON.stringify(assignments)}`);
    console.log(`fact assignments=${JSON.stringify(assignments)}`);
  } finally {
    await Promise.all(consumers.map((c) => c.disconnect().catch(() => {})));
    await admin.disconnect().catch(() => {});
  }
  console.log('split ok');
}

const timer = setTimeout(() => { console.error(`split timed out after ${TIMEOUT_MS / 1000}s`); process.exit(1); }, TIMEOUT_MS);
main().then(() => { clearTimeout(timer); }).catch((e) => {
  console.error(`split failed: ${e instanceof Failure ? e.message : e.stack}`);
  process.exit(1);
});
