/**
 * Where a DynamoDB call's time goes: client CPU (process.cpuUsage) and server CPU (the
 * emulator's /proc/<pid>/stat) per call, and wall time, for idem's and Powertools' full calls
 * and for the raw SDK requests each sends (the exact request shapes, built by hand), in
 * alternating rounds in one process. On a shared machine CPU per call is steadier than ops/s.
 *
 *   node profile/dynamodb-shapes.mjs [rounds=3] [calls=300] [concurrency=1,16] [filter]
 *
 * DYNAMODB_ENDPOINT and DYNAMODB_PID point at a running DynamoDB Local (its java PID for
 * server CPU); without them the script starts one (scripts/dynamodb-local.mjs, JIT on).
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { IdempotencyConfig, makeIdempotent } from '@aws-lambda-powertools/idempotency';
import { DynamoDBPersistenceLayer } from '@aws-lambda-powertools/idempotency/dynamodb';
import {
  ConditionalCheckFailedException,
  CreateTableCommand,
  DynamoDBClient,
  PutItemCommand,
  UpdateItemCommand,
} from '@aws-sdk/client-dynamodb';
import { createIdempotency } from '@idem/core';
import { createDynamoDbStore, recommendedDynamoDbClientConfig } from '@idem/store-dynamodb';
import { startDynamoDbLocal } from '../../scripts/dynamodb-local.mjs';

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
const [roundsText = '3', callsText = '300', concText = '1,16', filter = ''] = process.argv.slice(2);
const rounds = Number(roundsText);
const calls = Number(callsText);
const concurrencies = concText.split(',').map(Number);

const local = process.env.DYNAMODB_ENDPOINT
  ? { endpoint: process.env.DYNAMODB_ENDPOINT, pid: Number(process.env.DYNAMODB_PID), stop() {} }
  : await startDynamoDbLocal({ jvmFlags: [] });
const serverTicks = () => {
  if (!local.pid) return Number.NaN;
  const fields = readFileSync(`/proc/${local.pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return Number(fields[11]) + Number(fields[12]); // utime + stime, clock ticks (1/100 s)
};
const makeClient = () =>
  new DynamoDBClient({
    endpoint: local.endpoint,
    region: 'us-east-1',
    credentials: { accessKeyId: 'idembench', secretAccessKey: 'idembench' },
    ...recommendedDynamoDbClientConfig({ requestTimeoutMs: 10_000, maxAttempts: 3 }),
  });
const run = `${Date.now().toString(36)}-${randomBytes(3).toString('hex')}`;
const result = (key) => ({ key, data: 'x'.repeat(Math.max(0, 512 - 22 - key.length)) });
const createTable = (client, name, key) =>
  client.send(
    new CreateTableCommand({
      TableName: name,
      AttributeDefinitions: [{ AttributeName: key, AttributeType: 'S' }],
      KeySchema: [{ AttributeName: key, KeyType: 'HASH' }],
      BillingMode: 'PAY_PER_REQUEST',
    }),
  );

// Full library calls.
const idemClient = makeClient();
const store = createDynamoDbStore({ client: idemClient, tableName: `s-${run}-idem` });
await store.ensureTable({ pollMs: 50 });
const idem = createIdempotency({ store });
const ptClient = makeClient();
await createTable(ptClient, `s-${run}-pt`, 'id');
const config = new IdempotencyConfig({});
config.registerLambdaContext({ getRemainingTimeInMillis: () => 30_000 });
const ptOptions = {
  persistenceStore: new DynamoDBPersistenceLayer({
    tableName: `s-${run}-pt`,
    awsSdkV3Client: ptClient,
  }),
  config,
  keyPrefix: 'bench',
};
const ptRun = makeIdempotent(async (e) => result(e.key), ptOptions);
const ptReplay = makeIdempotent(async () => {
  throw new Error('ran');
}, ptOptions);

// BEFORE_STORE: another build of @idem/store-dynamodb (its dist/index.js), as a contender of
// its own ('lib before ...'): the store's A/B in one process.
const before = process.env.BEFORE_STORE
  ? await (async () => {
      const { createDynamoDbStore: createBefore } = await import(process.env.BEFORE_STORE);
      const beforeStore = createBefore({ client: makeClient(), tableName: `s-${run}-before` });
      await beforeStore.ensureTable({ pollMs: 50 });
      return createIdempotency({ store: beforeStore });
    })()
  : undefined;

// Raw shapes, one table each (idem's layout: pk; Powertools': id).
const rawClient = makeClient();
const T = { idem: `s-${run}-ri`, pt: `s-${run}-rp` };
await createTable(rawClient, T.idem, 'pk');
await createTable(rawClient, T.pt, 'id');
const hex = () => randomBytes(32).toString('hex');
const owner = () => `${randomBytes(16).toString('base64url')}.0`;
const idemOutcome = (key) =>
  Buffer.concat([
    Buffer.from(
      'IDEM\x01\0\0\0>{"kind":"value","value":{"encoding":"json","undefined":false}}',
      'latin1',
    ),
    Buffer.from(JSON.stringify(result(key))),
  ]);
const idemNames = {
  '#st': 'status',
  '#fp': 'fingerprint',
  '#ow': 'owner',
  '#fe': 'fence',
  '#lu': 'leaseUntil',
  '#ex': 'expiresAt',
  '#tt': 'ttl',
  '#oc': 'outcome',
  '#oe': 'outcomeEncoding',
  '#pk': 'pk',
};
const pick = (...keys) => Object.fromEntries(keys.map((k) => [k, idemNames[k]]));
const N = (v) => ({ N: String(v) });
async function conditionFails(promise) {
  try {
    await promise;
  } catch (error) {
    if (error instanceof ConditionalCheckFailedException && error.Item) return;
    throw error;
  }
  throw new Error('condition did not fail');
}
const ACQ_UPDATE =
  'SET #st = :inProgress, #fp = :fingerprint, #ow = :owner, #fe = if_not_exists(#fe, :zero) + :one, #lu = :leaseUntil, #ex = :expiresAt, #tt = :ttl REMOVE #oc, #oe';
const ACQ_ADD = ACQ_UPDATE.replace(', #fe = if_not_exists(#fe, :zero) + :one', '').replace(
  ' REMOVE',
  ' ADD #fe :one REMOVE',
);
// Only the placeholders the expressions use (DynamoDB rejects unused ones).
const used = (map, ...expressions) =>
  Object.fromEntries(
    Object.entries(map).filter(([k]) => expressions.some((e) => new RegExp(`${k}\\b`).test(e))),
  );
const ACQ_COND =
  'attribute_not_exists(#pk) OR #st = :released OR #ex <= :now OR (#st = :inProgress AND #lu <= :now AND #ow <> :owner)';
function idemAcquire(
  key,
  who,
  returnValues = 'ALL_OLD',
  update = ACQ_UPDATE,
  condition = ACQ_COND,
) {
  const now = Date.now();
  return rawClient.send(
    new UpdateItemCommand({
      TableName: T.idem,
      Key: { pk: { S: key } },
      ReturnValues: returnValues,
      UpdateExpression: update,
      ConditionExpression: condition,
      ExpressionAttributeNames: used(idemNames, update, condition),
      ExpressionAttributeValues: used(
        {
          ':inProgress': { S: 'in_progress' },
          ':released': { S: 'released' },
          ':fingerprint': { S: '' },
          ':owner': { S: who },
          ':zero': N(0),
          ':one': N(1),
          ':leaseUntil': N(now + 30_000),
          ':expiresAt': N(now + 86_430_000),
          ':ttl': N(Math.ceil((now + 86_430_000) / 1000)),
          ':now': N(now),
        },
        update,
        condition,
      ),
      ReturnValuesOnConditionCheckFailure: 'ALL_OLD',
    }),
  );
}
function idemComplete(key, who, outcome = { B: idemOutcome(key) }) {
  const now = Date.now();
  return rawClient.send(
    new UpdateItemCommand({
      TableName: T.idem,
      Key: { pk: { S: key } },
      ReturnValues: 'NONE',
      UpdateExpression: 'SET #st = :completed, #ex = :expiresAt, #tt = :ttl, #oc = :outcome',
      ConditionExpression: '#ow = :owner AND #st = :inProgress AND #ex > :now',
      ExpressionAttributeNames: pick('#st', '#ex', '#tt', '#oc', '#ow'),
      ExpressionAttributeValues: {
        ':completed': { S: 'completed' },
        ':expiresAt': N(now + 86_400_000),
        ':ttl': N(Math.ceil((now + 86_400_000) / 1000)),
        ':outcome': outcome,
        ':owner': { S: who },
        ':inProgress': { S: 'in_progress' },
        ':now': N(now),
      },
      ReturnValuesOnConditionCheckFailure: 'ALL_OLD',
    }),
  );
}
function ptPut(key) {
  const now = Date.now();
  return rawClient.send(
    new PutItemCommand({
      TableName: T.pt,
      Item: {
        id: { S: key },
        expiration: N(Math.floor(now / 1000) + 3600),
        status: { S: 'INPROGRESS' },
        in_progress_expiration: N(now + 30_000),
      },
      ConditionExpression:
        'attribute_not_exists(#id) OR #expiry < :now OR (#status = :inprogress AND attribute_exists(#in_progress_expiry) AND #in_progress_expiry < :now_in_millis)',
      ExpressionAttributeNames: {
        '#id': 'id',
        '#expiry': 'expiration',
        '#in_progress_expiry': 'in_progress_expiration',
        '#status': 'status',
      },
      ExpressionAttributeValues: {
        ':now': N(now / 1000),
        ':now_in_millis': N(now),
        ':inprogress': { S: 'INPROGRESS' },
      },
      ReturnValuesOnConditionCheckFailure: 'ALL_OLD',
    }),
  );
}
function ptUpdate(key) {
  const r = result(key);
  return rawClient.send(
    new UpdateItemCommand({
      TableName: T.pt,
      Key: { id: { S: key } },
      UpdateExpression: 'SET #expiry = :expiry, #status = :status, #response_data = :response_data',
      ExpressionAttributeNames: {
        '#expiry': 'expiration',
        '#status': 'status',
        '#response_data': 'data',
      },
      ExpressionAttributeValues: {
        ':expiry': N(Math.floor(Date.now() / 1000) + 3600),
        ':status': { S: 'COMPLETED' },
        ':response_data': { M: { key: { S: r.key }, data: { S: r.data } } },
      },
    }),
  );
}

const pools = {};
async function pool(name, make) {
  if (!pools[name]) {
    pools[name] = Array.from({ length: 64 }, () => hex());
    for (const key of pools[name]) await make(key);
  }
  return pools[name];
}
/** 64 keys acquired and completed through raw idem calls (made once, shared by the replays). */
const completedIdemKeys = () =>
  pool('ri', async (k) => {
    const w = owner();
    await idemAcquire(k, w);
    await idemComplete(k, w);
  });
let seq = 0;
const fresh = () => `${hex()}${seq++}`;
const shapes = {
  'lib idem cycle': async () => {
    const key = fresh();
    if ((await idem.execute({ key }, async () => result(key))).replayed)
      throw new Error('replayed');
  },
  'lib pt cycle': async () => {
    const key = fresh();
    await ptRun({ key });
  },
  'lib idem replay': async (i) => {
    const key = (await pool('li', (k) => idem.execute({ key: k }, async () => result(k))))[i % 64];
    if (
      !(
        await idem.execute({ key }, async () => {
          throw new Error('ran');
        })
      ).replayed
    )
      throw new Error('ran');
  },
  'lib pt replay': async (i) => {
    const key = (await pool('lp', (k) => ptRun({ key: k })))[i % 64];
    await ptReplay({ key });
  },
  ...(before && {
    'lib before cycle': async () => {
      const key = fresh();
      if ((await before.execute({ key }, async () => result(key))).replayed)
        throw new Error('replayed');
    },
    'lib before replay': async (i) => {
      const key = (await pool('lb', (k) => before.execute({ key: k }, async () => result(k))))[
        i % 64
      ];
      if (
        !(
          await before.execute({ key }, async () => {
            throw new Error('ran');
          })
        ).replayed
      )
        throw new Error('ran');
    },
  }),
  'raw idem cycle': async () => {
    const key = fresh();
    const who = owner();
    await idemAcquire(key, who);
    await idemComplete(key, who);
  },
  'raw pt cycle': async () => {
    const key = fresh();
    await ptPut(key);
    await ptUpdate(key);
  },
  'raw idem replay': async (i) => {
    const key = (await completedIdemKeys())[i % 64];
    await conditionFails(idemAcquire(key, owner()));
  },
  'raw pt replay': async (i) => {
    const key = (
      await pool('rp', async (k) => {
        await ptPut(k);
        await ptUpdate(k);
      })
    )[i % 64];
    await conditionFails(ptPut(key));
  },
};
// Variants of idem's requests, one change each, to see what the server pays for.
const variants = {
  'acquire RV NONE': (key, who) => idemAcquire(key, who, 'NONE'),
  'acquire no REMOVE': (key, who) =>
    idemAcquire(key, who, 'ALL_OLD', ACQ_UPDATE.replace(' REMOVE #oc, #oe', '')),
  'acquire no if_not_exists': (key, who) =>
    idemAcquire(
      key,
      who,
      'ALL_OLD',
      ACQ_UPDATE.replace('if_not_exists(#fe, :zero) + :one', ':one'),
    ),
  'acquire short cond': (key, who) =>
    idemAcquire(key, who, 'ALL_OLD', ACQ_UPDATE, 'attribute_not_exists(#pk) OR #ex <= :now'),
  'acquire ADD fence': (key, who) => idemAcquire(key, who, 'ALL_OLD', ACQ_ADD),
  'acquire ADD no REMOVE': (key, who) =>
    idemAcquire(key, who, 'ALL_OLD', ACQ_ADD.replace(' REMOVE #oc, #oe', '')),
};
for (const [name, acquire] of Object.entries(variants)) {
  shapes[`var ${name}`] = async () => {
    const key = fresh();
    const who = owner();
    await acquire(key, who);
    await idemComplete(key, who);
  };
}
for (const [name, acquire] of Object.entries(variants)) {
  shapes[`req ${name}`] = () => acquire(fresh(), owner());
}
// An idem record written whole (fence 1, no fingerprint), expiring `lifeMs` after `now`.
function idemItem(key, who, status, leaseUntil, now, lifeMs) {
  return {
    pk: { S: key },
    status: { S: status },
    fingerprint: { S: '' },
    owner: { S: who },
    fence: N(1),
    leaseUntil: N(leaseUntil),
    expiresAt: N(now + lifeMs),
    ttl: N(Math.ceil((now + lifeMs) / 1000)),
  };
}
// idem's first acquisition as a PutItem (fresh keys only: fence 1), for comparison.
function idemPut(key, who, leaseUntil) {
  const now = Date.now();
  return rawClient.send(
    new PutItemCommand({
      TableName: T.idem,
      Item: idemItem(key, who, 'in_progress', leaseUntil ?? now + 30_000, now, 86_430_000),
      ConditionExpression: 'attribute_not_exists(#pk)',
      ExpressionAttributeNames: { '#pk': 'pk' },
      ReturnValuesOnConditionCheckFailure: 'ALL_OLD',
    }),
  );
}
shapes['req idem put'] = () => idemPut(fresh(), owner());
shapes['raw idem-put cycle'] = async () => {
  const key = fresh();
  const who = owner();
  await idemPut(key, who);
  await idemComplete(key, who);
};
shapes['raw idem-put replay'] = async (i) => {
  const key = (await completedIdemKeys())[i % 64];
  await conditionFails(idemPut(key, owner()));
};
// The completion as a conditional PutItem of the whole completed item (the owner knows the
// fence, fingerprint and lease it wrote; the condition checks them with owner and status).
function idemPutComplete(key, who, leaseUntil, outcome = { B: idemOutcome(key) }) {
  const now = Date.now();
  return rawClient.send(
    new PutItemCommand({
      TableName: T.idem,
      Item: { ...idemItem(key, who, 'completed', leaseUntil, now, 86_400_000), outcome },
      ConditionExpression:
        '#ow = :owner AND #st = :inProgress AND #ex > :now AND #fe = :fence AND #lu = :leaseUntil',
      ExpressionAttributeNames: pick('#ow', '#st', '#ex', '#fe', '#lu'),
      ExpressionAttributeValues: {
        ':owner': { S: who },
        ':inProgress': { S: 'in_progress' },
        ':now': N(now),
        ':fence': N(1),
        ':leaseUntil': N(leaseUntil),
      },
      ReturnValuesOnConditionCheckFailure: 'ALL_OLD',
    }),
  );
}
shapes['raw idem put-put cycle'] = async () => {
  const key = fresh();
  const who = owner();
  const leaseUntil = Date.now() + 30_000;
  await idemPut(key, who, leaseUntil);
  await idemPutComplete(key, who, leaseUntil);
};
shapes['req idem acquire'] = () => idemAcquire(fresh(), owner());
shapes['req pt put'] = () => ptPut(fresh());
shapes['var complete S'] = async () => {
  const key = fresh();
  const who = owner();
  await idemAcquire(key, who);
  await idemComplete(key, who, { S: idemOutcome(key).toString('latin1') });
};

const selected = Object.keys(shapes).filter((n) => n.includes(filter));
const samples = {};
async function measure(name, concurrency) {
  const fn = shapes[name];
  let next = 0;
  const worker = async () => {
    while (next < calls) await fn(next++);
  };
  if (!samples[`${name} c${concurrency}`]) for (let i = 0; i < 32; i++) await fn(i); // warm, first round only
  const cpu0 = process.cpuUsage();
  const s0 = serverTicks();
  const t0 = performance.now();
  await Promise.all(Array.from({ length: concurrency }, worker));
  const ms = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  const s1 = serverTicks();
  const row = {
    ops: (calls / ms) * 1000,
    client: (cpu.user + cpu.system) / calls,
    server: ((s1 - s0) * 10_000) / calls,
    ms,
    cpu: cpu.user + cpu.system,
    ticks: s1 - s0,
  };
  const label = `${name} c${concurrency}`;
  samples[label] ??= [];
  samples[label].push(row);
}
for (let r = 0; r < rounds; r++) {
  const order = selected.map((_, i) => selected[(i + r) % selected.length]);
  for (const concurrency of concurrencies)
    for (const name of order) await measure(name, concurrency);
  console.error(`round ${r + 1}/${rounds} done`);
}
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
};
if (process.env.SHAPES_ROWS)
  for (const [name, rows] of Object.entries(samples))
    console.log(
      name,
      rows
        .map((x) => `${x.ops.toFixed(0)}/${x.client.toFixed(0)}/${x.server.toFixed(0)}`)
        .join('  '),
    );
// Medians of the rounds, and totals over all rounds (steadier when rounds are short).
const sum = (rows, f) => rows.reduce((a, x) => a + x[f], 0);
console.log(
  '| shape | ops/s (median) | client CPU µs/call (median) | server CPU µs/call (median) | ops/s (total) | client µs/call (total) | server µs/call (total) |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |',
);
for (const [name, rows] of Object.entries(samples)) {
  const n = rows.length * calls;
  console.log(
    `| ${name} | ${median(rows.map((x) => x.ops)).toFixed(0)} | ${median(rows.map((x) => x.client)).toFixed(0)} | ${median(rows.map((x) => x.server)).toFixed(0)} | ${((n / sum(rows, 'ms')) * 1000).toFixed(0)} | ${(sum(rows, 'cpu') / n).toFixed(0)} | ${((sum(rows, 'ticks') * 10_000) / n).toFixed(0)} |`,
  );
}
for (const c of [idemClient, ptClient, rawClient]) c.destroy();
await local.stop();
