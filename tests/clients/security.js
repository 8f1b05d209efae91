#!/usr/bin/env node
// kafkajs over the broker's secured listeners (tests/tests/security_clients.rs).
//
//   security.js roundtrip --bootstrap B --protocol SSL|SASL_SSL|SASL_PLAINTEXT [--mechanism M
//       --user U --password PW] [--ca CA] [--cert C --key K] --topic T --count N
//     produces N records and consumes them back; prints `consumed N`
//   security.js refused (same options, no topic)
//     expects the connection to fail; prints `refused: <ErrorName>: <message>`, or
//     `UNEXPECTEDLY CONNECTED`
'use strict';
const fs = require('node:fs');
const { parseArgs } = require('node:util');
const { Kafka, logLevel } = require('kafkajs');

const { values: args, positionals } = require.main === module ? parseArgs({
  allowPositionals: true,
  options: Object.fromEntries(
    ['bootstrap', 'protocol', 'mechanism', 'user', 'password', 'ca', 'cert', 'key', 'topic', 'count']
      .map((name) => [name, { type: 'string' }])),
}) : { values: {}, positionals: [] };

// Also what acl.js connects with (`options` as this script's command line options, `extra`
// more of kafkajs's client config).
function client(options = args, extra = {}) {
  const config = { clientId: 'security-js', brokers: [options.bootstrap], logLevel: logLevel.NOTHING,
    connectionTimeout: 10_000, authenticationTimeout: 10_000, retry: { retries: 2 } };
  if (options.protocol.endsWith('SSL')) {
    config.ssl = { ca: [fs.readFileSync(options.ca, 'utf8')], rejectUnauthorized: true };
    if (options.cert) {
      config.ssl.cert = fs.readFileSync(options.cert, 'utf8');
      config.ssl.key = fs.readFileSync(options.key, 'utf8');
    }
  }
  if (options.protocol.startsWith('SASL')) {
    config.sasl = { mechanism: options.mechanism.toLowerCase(), username: options.user, password: options.password };
  }
  return new Kafka({ ...config, ...extra });
}

async function roundtrip() {
  const kafka = client();
  const count = Number(args.count);
  const producer = kafka.producer({ allowAutoTopicCreation: true });
  await producer.connect();
  const messages = Array.from({ length: count }, (_, i) => ({ value: `value-${i}` }));
  await producer.send({ topic: args.topic, acks: -1, messages });
  await producer.disconnect();
  const consumer = kafka.consumer({ groupId: `g-${Date.now()}-${Math.random()}` });
  await consumer.connect();
  await consumer.subscribe({ topic: args.topic, fromBeginning: true });
  const values = [];
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`only ${values.length} of ${count} consumed`)), 30_000);
    consumer.run({
      eachMessage: async ({ message }) => {
        values.push(message.value.toString());
        if (values.length === count) {
          clearTimeout(timer);
          resolve();
        }
      },
    }).catch(reject);
  });
  await consumer.disconnect();
  const expected = messages.map((m) => m.value);
  if (JSON.stringify(values) !== JSON.stringify(expected)) throw new Error(`got ${values.slice(0, 5)}`);
  console.log('consumed', values.length);
}

async function refused() {
  const admin = client().admin();
  try {
    await admin.connect();
    await admin.listTopics();
    console.log('UNEXPECTEDLY CONNECTED');
  } catch (e) {
    console.log(`refused: ${e.name}: ${e.message}`);
  } finally {
    await admin.disconnect().catch(() => {});
  }
}

module.exports = { client };
if (require.main === module) {
  const command = { roundtrip, refused }[positionals[0]];
  if (!command) {
    console.error('usage: security.js roundtrip|refused --bootstrap B --protocol P ...');
    process.exit(2);
  }
  command().catch((e) => {
    console.error(e.stack || String(e));
    process.exit(1);
  });
}
