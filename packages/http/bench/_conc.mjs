import { createIdempotencyHandler, bodyFromBytes } from '@idem/http';
import { createMemoryStore } from '@idem/store-memory';
const conc = Number(process.argv[2] ?? 1), total = Number(process.argv[3] ?? 40000), mode = process.argv[4] ?? 'first';
const handler = createIdempotencyHandler({ store: createMemoryStore({ maxEntries: 1_000_000, maxBytes: 2 ** 30 }), scope: 'global' });
const body = Buffer.from(JSON.stringify({ sku: 'A-1', qty: 2 }));
const responseBody = Buffer.from(JSON.stringify({ id: 1, sku: 'A-1', qty: 2, status: 'created' }));
const responseHeaders = new Headers({ 'content-type': 'application/json; charset=utf-8', 'content-length': String(responseBody.length) });
let serial = 0;
function request(key) {
  const all = { 'content-type': 'application/json', 'content-length': String(body.length), 'idempotency-key': key };
  return { native: {}, method: 'POST', url: 'http://localhost/orders', route: '/orders', header: (n) => all[n.toLowerCase()], readBody: async () => bodyFromBytes(body, all['content-type']) };
}
async function first() {
  const d = await handler.begin(request(`k-${serial++}`));
  if (d.action !== 'execute') throw new Error(d.action);
  if (mode === 'release') { await d.recorder.abandon?.(); return; }
  d.recorder.start(201, responseHeaders);
  d.recorder.capture(Buffer.from(responseBody));
  await d.recorder.finish();
}
async function worker(n) { for (let i = 0; i < n; i++) await first(); }
await worker(2000);
const t = process.cpuUsage();
await Promise.all(Array.from({ length: conc }, () => worker(total / conc)));
const u = process.cpuUsage(t);
console.log(`conc ${conc}: ${((u.user + u.system) / total).toFixed(1)} µs`);
