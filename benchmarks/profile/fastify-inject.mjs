/**
 * In-process CPU per request of the HTTP suite's Fastify endpoint through `app.inject()` (no
 * socket, no load generator): plain against the plugin from `packages`, alternating rounds.
 *   node profile/fastify-inject.mjs [packages] [first|replay] [count] [rounds]
 */
import Fastify from 'fastify';

const [
  root = new URL('../../packages', import.meta.url).pathname,
  op = 'first',
  countText = '20000',
  roundsText = '5',
] = process.argv.slice(2);
const count = Number(countText);
const rounds = Number(roundsText);
const BODY = JSON.stringify({ sku: 'A-1', qty: 2 });
let next = 1;
const created = (order) => ({ id: next++, sku: order.sku, qty: order.qty, status: 'created' });

async function app(withIdem) {
  const app = Fastify();
  if (withIdem) {
    const { createMemoryStore } = await import(`${root}/store-memory/dist/index.js`);
    const { idempotency } = await import(`${root}/fastify/dist/index.js`);
    await app.register(idempotency, {
      store: createMemoryStore({ maxEntries: 2_000_000, maxBytes: 2 * 1024 ** 3 }),
      scope: 'global',
    });
  }
  app.post('/orders', async (request, reply) => reply.code(201).send(created(request.body)));
  await app.ready();
  return app;
}

let batch = 0;
async function run(app, n) {
  batch++;
  const start = process.cpuUsage();
  const inflight = [];
  for (let i = 0; i < n; i++) {
    const key = op === 'first' ? `k${batch}-${i}` : `replay-${i % 64}`;
    inflight.push(
      app.inject({
        method: 'POST',
        url: '/orders',
        headers: { 'content-type': 'application/json', 'idempotency-key': key },
        payload: BODY,
      }),
    );
    if (inflight.length === 32) {
      for (const r of await Promise.all(inflight))
        if (r.statusCode !== 201) throw new Error(`${r.statusCode} ${r.body}`);
      inflight.length = 0;
    }
  }
  for (const r of await Promise.all(inflight))
    if (r.statusCode !== 201) throw new Error(String(r.statusCode));
  const used = process.cpuUsage(start);
  return (used.user + used.system) / n;
}

const apps = { plain: await app(false), idem: await app(true) };
// Replays: the 64 keys recorded once first.
if (op === 'replay')
  for (let i = 0; i < 64; i++)
    await apps.idem.inject({
      method: 'POST',
      url: '/orders',
      headers: { 'content-type': 'application/json', 'idempotency-key': `replay-${i}` },
      payload: BODY,
    });
for (const a of Object.values(apps)) await run(a, 5000);
const figures = { plain: [], idem: [] };
for (let r = 0; r < rounds; r++) {
  const order = r % 2 ? ['idem', 'plain'] : ['plain', 'idem'];
  for (const name of order) figures[name].push(await run(apps[name], count));
}
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const p = median(figures.plain);
const i = median(figures.idem);
console.log(
  `fastify inject ${op}: plain ${p.toFixed(1)} µs, idem ${i.toFixed(1)} µs, added ${(i - p).toFixed(1)} µs, plain/idem ${(p / i).toFixed(2)}  [${figures.idem.map((x) => x.toFixed(0)).join(' ')}]`,
);
