// In-process cost of the HTTP layer without a server: `begin()` on a described request, then
// (first executions) the recorder fed a JSON response, on the memory store. Prints the CPU
// time (user + system, so that other processes on a shared machine count less) per request
// for each mode, rounds alternating. Run with `node --cpu-prof` to profile it.
//   node bench/begin.mjs [--rounds 5] [--count 20000] [--modes first,replay,engine,engine-replay]

import { parseArgs } from 'node:util';
import { createIdempotency } from '@idem/core';
import { bodyFromBytes, createIdempotencyHandler } from '@idem/http';
import { createMemoryStore } from '@idem/store-memory';

const { values } = parseArgs({
  options: {
    rounds: { type: 'string', default: '5' },
    count: { type: 'string', default: '20000' },
    modes: { type: 'string', default: 'first,replay,engine,engine-replay' },
  },
});
const rounds = Number(values.rounds);
const count = Number(values.count);

const handler = createIdempotencyHandler({
  store: createMemoryStore({ maxEntries: 1_000_000, maxBytes: 2 ** 30, sweepIntervalMs: 1_000 }),
  scope: (req) => ({ principal: req.account }),
});
const body = Buffer.from(
  JSON.stringify({
    amount: 4200,
    currency: 'eur',
    customer: 'cus_9f3a7c',
    description: 'Order 1042',
    metadata: { order: 'ord_1042', channel: 'web' },
  }),
);
const headers = {
  'content-type': 'application/json',
  'content-length': String(body.length),
  'x-account-id': 'acct_bench',
};
const responseBody = Buffer.from(JSON.stringify({ id: 'ch_1', amount: 4200, status: 'succeeded' }));
const responseHeaders = new Headers({
  'content-type': 'application/json; charset=utf-8',
  'content-length': String(responseBody.length),
  etag: 'W/"3a-abc"',
  'x-powered-by': 'Express',
});

let serial = 0;
function request(key) {
  const all = { ...headers, 'idempotency-key': key };
  return {
    native: { account: 'acct_bench' },
    method: 'POST',
    url: 'http://localhost/charges',
    route: '/charges',
    header: (name) => all[name.toLowerCase()],
    readBody: async () => bodyFromBytes(body, all['content-type']),
  };
}

async function first() {
  const decision = await handler.begin(request(`k-${serial++}`));
  if (decision.action !== 'execute') throw new Error(`first: ${decision.action}`);
  const { recorder } = decision;
  recorder.start(201, responseHeaders);
  recorder.capture(Buffer.from(responseBody));
  await recorder.finish();
}

const replayKey = 'replay-key';
async function replay() {
  const decision = await handler.begin(request(replayKey));
  if (decision.action !== 'respond' || !decision.replayed)
    throw new Error(`replay: ${decision.action} ${decision.response?.status}`);
  // The Node adapters write the prepared answer as it is: nothing to read here.
}

// The engine alone (core and the store), for the floor under the HTTP layer: what `first`
// costs without reading, fingerprinting or recording a response.
const engine = createIdempotency({
  store: createMemoryStore({ maxEntries: 1_000_000, maxBytes: 2 ** 30, sweepIntervalMs: 1_000 }),
});
const outcome = {
  meta: {
    format: 'idem/http/v1',
    status: 201,
    headers: [['content-type', 'application/json']],
    chunks: [responseBody.length],
  },
  body: responseBody,
};
async function engineOnly() {
  const begun = await engine.begin({
    key: `e-${serial++}`,
    scope: ['idem/http/v1', null, 'POST /charges'],
    fingerprint: 'f',
  });
  await begun.execution.complete(outcome);
}

await engine
  .begin({ key: 'e-replay', scope: null, fingerprint: 'f' })
  .then((begun) => begun.execution.complete(outcome));
async function engineReplay() {
  const begun = await engine.begin({ key: 'e-replay', scope: null, fingerprint: 'f' });
  if (begun.kind !== 'replay') throw new Error('engine replay: not replayed');
}

const modes = Object.fromEntries(
  Object.entries({ first, replay, engine: engineOnly, 'engine-replay': engineReplay }).filter(
    ([name]) => values.modes.split(',').includes(name),
  ),
);
await first();
await handler.begin(request(replayKey)).then(async (d) => {
  d.recorder.start(201, responseHeaders);
  d.recorder.capture(responseBody);
  await d.recorder.finish();
});
const results = Object.fromEntries(Object.keys(modes).map((m) => [m, []]));
for (let round = 0; round < rounds; round++) {
  for (const [name, run] of Object.entries(modes)) {
    const started = process.cpuUsage();
    for (let i = 0; i < count; i++) await run();
    const { user, system } = process.cpuUsage(started);
    results[name].push((user + system) / count);
  }
}
for (const [name, list] of Object.entries(results)) {
  const sorted = [...list].sort((a, b) => a - b);
  console.log(
    `${name}: ${sorted[sorted.length >> 1].toFixed(2)} µs CPU/request (median of ${rounds})`,
  );
}
