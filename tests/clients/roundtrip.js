#!/usr/bin/env node
// Round trip through kafkajs: create a topic, produce, read it all back (same checks as
// roundtrip.py). Exit 0 and one `roundtrip ok` line on success; the reason on stderr and
// exit 1 on failure.
//
// kafkajs consumes only through a consumer group (subscribe with a group id).
'use strict';
const { parseArgs } = require('node:util');
const { Kafka, CompressionTypes, Partitioners, logLevel } = require('kafkajs');

const TOTAL_TIMEOUT_MS = 60_000;
const CONSUME_TIMEOUT_MS = 30_000;
const KEYS = 17;
const VALUE_LEN = 100;

const keyOf = (i) => `key-${i % KEYS}`;
const valueOf = (i) => `value-${String(i).padStart(6, '0')}-`.padEnd(VALUE_LEN, 'x');

class Failure extends Error {}

function parse() {
  const { values } = parseArgs({
    options: {
      bootstrap: { type: 'string' },
      topic: { type: 'string' },
      partitions: { type: 'string' },
      records: { type: 'string' },
      compression: { type: 'string', default: 'none' },
      idempotent: { type: 'boolean', default: false },
      phase: { type: 'string', default: 'all' },
      'no-create': { type: 'boolean', default: false },
    },
  });
  const usage = 'usage: roundtrip.js --bootstrap HOST:PORT --topic T --partitions N --records M ' +
    '[--compression none|gzip] [--idempotent] [--phase all|produce|consume] [--no-create]';
  const args = { ...values, partitions: Number(values.partitions), records: Number(values.records) };
  if (!args.bootstrap || !args.topic || !(args.partitions > 0) || !(args.records >= 0) ||
      !['none', 'gzip'].includes(args.compression) || !['all', 'produce', 'consume'].includes(args.phase)) {
    console.error(usage);
    process.exit(2);
  }
  return args;
}

async function produce(kafka, args) {
  const admin = kafka.admin();
  const producer = kafka.producer({
    idempotent: args.idempotent,
    createPartitioner: Partitioners.DefaultPartitioner, // murmur2, as the Java client and kafka-python
  });
  try {
    await admin.connect();
    if (!args['no-create']) {
      const created = await admin.createTopics({
        topics: [{ topic: args.topic, numPartitions: args.partitions, replicationFactor: 1 }],
        waitForLeaders: true,
      });
      if (!created) throw new Failure(`topic ${args.topic} already exists`);
    }
    await producer.connect();
    const messages = [];
    for (let i = 0; i < args.records; i++) messages.push({ key: keyOf(i), value: valueOf(i) });
    const results = await producer.send({
      topic: args.topic,
      acks: -1,
      compression: args.compression === 'gzip' ? CompressionTypes.GZIP : CompressionTypes.None,
      messages,
    });
    const failed = results.filter((r) => r.errorCode !== 0);
    if (failed.length) throw new Failure(`produce errors: ${JSON.stringify(failed)}`);
    // The broker's own count: catches records acknowledged but not appended, or appended twice.
    const offsets = await admin.fetchTopicOffsets(args.topic);
    const high = offsets.reduce((sum, p) => sum + Number(p.high), 0);
    if (high !== args.records) throw new Failure(`high watermarks sum to ${high}, expected ${args.records}`);
  } finally {
    await producer.disconnect().catch(() => {});
    await admin.disconnect().catch(() => {});
  }
}

async function consume(kafka, args) {
  const consumer = kafka.consumer({ groupId: `roundtrip-${args.topic}` });
  const seen = [];
  let timer;
  try {
    await consumer.connect();
    await consumer.subscribe({ topics: [args.topic], fromBeginning: true });
    // Settles when every record is in, the consumer dies for good, or time runs out.
    await new Promise((resolve, reject) => {
      if (args.records === 0) return resolve();
      timer = setTimeout(resolve, CONSUME_TIMEOUT_MS);
      consumer.on(consumer.events.CRASH, ({ payload }) => {
        if (!payload.restart) reject(new Failure(`consumer crashed: ${payload.error.name}: ${payload.error.message}`));
      });
      consumer.run({
        autoCommit: false,
        eachMessage: async ({ partition, message }) => {
          seen.push([partition, Number(message.offset), message.key?.toString(), message.value?.toString()]);
          if (seen.length >= args.records) resolve();
        },
      }).catch(reject);
    });
  } finally {
    clearTimeout(timer);
    await consumer.disconnect().catch(() => {});
  }
  return seen;
}

function check(args, seen) {
  if (seen.length !== args.records) {
    throw new Failure(`consumed ${seen.length} records within ${CONSUME_TIMEOUT_MS / 1000}s, expected ${args.records}`);
  }
  const values = new Set();
  const nextOffset = new Map();
  const partitionOfKey = new Map();
  const lastIndexOfKey = new Map();
  for (const [partition, offset, key, value] of seen) {
    if (values.has(value)) throw new Failure(`value ${String(value).slice(0, 13)} consumed twice`);
    values.add(value);
    const i = Number(value?.slice(6, 12));
    if (!(i >= 0 && i < args.records) || value !== valueOf(i) || key !== keyOf(i)) {
      throw new Failure(`record at ${partition}/${offset} is unexpected: key=${key} value=${value}`);
    }
    const expected = nextOffset.get(partition) ?? 0;
    if (offset !== expected) throw new Failure(`partition ${partition}: offset ${offset} where ${expected} was expected`);
    nextOffset.set(partition, offset + 1);
    if (!partitionOfKey.has(key)) partitionOfKey.set(key, partition);
    if (partitionOfKey.get(key) !== partition) {
      throw new Failure(`key ${key} on partitions ${partitionOfKey.get(key)} and ${partition}`);
    }
    if (i <= (lastIndexOfKey.get(key) ?? -1)) {
      throw new Failure(`key ${key}: record ${i} after record ${lastIndexOfKey.get(key)}`);
    }
    lastIndexOfKey.set(key, i);
  }
  // M distinct values, each a valid index below M: every produced value was seen.
}

async function main() {
  const args = parse();
  setTimeout(() => fail(args, `no result within ${TOTAL_TIMEOUT_MS / 1000}s`), TOTAL_TIMEOUT_MS);
  const kafka = new Kafka({ clientId: 'roundtrip-js', brokers: [args.bootstrap], logLevel: logLevel.ERROR });
  try {
    if (args.phase !== 'consume') await produce(kafka, args);
    if (args.phase !== 'produce') check(args, await consume(kafka, args));
  } catch (e) {
    fail(args, e instanceof Failure ? e.message : `${e.name}: ${e.message}`);
  }
  console.log(`roundtrip ok: client=kafkajs records=${args.records} partitions=${args.partitions}`);
  process.exit(0);
}

function fail(args, reason) {
  console.error(`roundtrip FAILED: client=kafkajs phase=${args.phase}: ${reason}`);
  process.exit(1);
}

main();
