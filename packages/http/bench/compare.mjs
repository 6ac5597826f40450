// Two builds of the layer in ONE process, rounds alternating: CPU time per first execution
// and per replay of `begin()` + recorder (as bench/begin.mjs), for each. Separate processes
// on a shared machine differ by more than most changes do; one process sees the same load.
//   node bench/compare.mjs --before /other/checkout/packages [--after packages] [--rounds 6]
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    before: { type: 'string' },
    after: { type: 'string', default: new URL('../..', import.meta.url).pathname },
    rounds: { type: 'string', default: '6' },
    count: { type: 'string', default: '10000' },
  },
});
if (!values.before)
  throw new Error('--before DIR: the packages folder of another (built) checkout');

const body = Buffer.from(
  JSON.stringify({ amount: 4200, currency: 'eur', customer: 'cus_9f3a7c', metadata: { a: 'b' } }),
);
const responseBody = Buffer.from(JSON.stringify({ id: 'ch_1', amount: 4200, status: 'ok' }));
const responseHeaders = new Headers({
  'content-type': 'application/json; charset=utf-8',
  'content-length': String(responseBody.length),
  etag: 'W/"3a-abc"',
});

async function build(root) {
  const http = await import(`${root}/http/dist/index.js`);
  const { createMemoryStore } = await import(`${root}/store-memory/dist/index.js`);
  const handler = http.createIdempotencyHandler({
    store: createMemoryStore({ maxEntries: 1_000_000, maxBytes: 2 ** 30 }),
    retentionMs: 3_600_000,
    scope: (native) => ({ principal: native.account }),
  });
  const request = (key) => {
    const headers = {
      'content-type': 'application/json',
      'content-length': String(body.length),
      'idempotency-key': key,
    };
    return {
      native: { account: 'acct' },
      method: 'POST',
      url: 'http://localhost/charges',
      route: '/charges',
      header: (name) => headers[name.toLowerCase()],
      readBody: async () => http.bodyFromBytes(body, headers['content-type']),
    };
  };
  let serial = 0;
  const first = async (key = `k-${serial++}`) => {
    const { recorder } = await handler.begin(request(key));
    recorder.start(201, responseHeaders);
    recorder.capture(Buffer.from(responseBody));
    await recorder.finish();
  };
  await first('replayed');
  const replay = async () => {
    const decision = await handler.begin(request('replayed'));
    if (!decision.replayed) throw new Error('not a replay');
  };
  return { first, replay };
}

const builds = { before: await build(values.before), after: await build(values.after) };
const results = {};
for (let round = 0; round < Number(values.rounds); round++) {
  const order = round % 2 ? ['after', 'before'] : ['before', 'after'];
  for (const mode of ['first', 'replay'])
    for (const name of order) {
      const run = builds[name][mode];
      const count = Number(values.count);
      const started = process.cpuUsage();
      for (let i = 0; i < count; i++) await run();
      const { user, system } = process.cpuUsage(started);
      const key = `${mode} ${name}`;
      results[key] = [...(results[key] ?? []), (user + system) / count];
    }
}
for (const [name, list] of Object.entries(results)) {
  const sorted = [...list].sort((a, b) => a - b);
  console.log(`${name.padEnd(14)} ${sorted[sorted.length >> 1].toFixed(1)} µs CPU (median)`);
}
