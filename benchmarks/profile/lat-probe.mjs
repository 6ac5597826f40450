/**
 * Latency and requests/s of the HTTP suite's endpoint without middleware (`plain`) and with
 * idem's adapter from a built `packages` folder, in alternating rounds of 2 s each: whether
 * idem makes the server wait (timers, split writes, Nagle / delayed-ACK stalls show as
 * latency far above the added CPU, 40 ms steps with one connection) or only work more.
 *
 *   node profile/lat-probe.mjs <hono|express|fastify> /abs/path/to/packages [first|replay] [connections]
 */
import { fork } from 'node:child_process';
import autocannon from 'autocannon';

const [framework = 'fastify', root, op = 'replay', connections = '1'] = process.argv.slice(2);
if (!root)
  throw new Error('usage: lat-probe.mjs <framework> /abs/path/to/packages [op] [connections]');
const serveFile = new URL('./http-serve.mjs', import.meta.url).pathname;
const BODY = JSON.stringify({ sku: 'A-1', qty: 2 });
const request = (key) => ({
  method: 'POST',
  path: '/orders',
  headers: { 'content-type': 'application/json', 'idempotency-key': key },
  body: BODY,
});
const keys = Array.from({ length: 64 }, (_, i) => `replay-${i}`);

async function start(which) {
  const child = fork(serveFile, [framework, which], { stdio: 'inherit' });
  const { port } = await new Promise((resolve) => child.once('message', resolve));
  return { child, url: `http://127.0.0.1:${port}` };
}

const servers = { plain: await start('plain'), idem: await start(root) };
for (const server of Object.values(servers))
  for (const key of keys)
    await (await fetch(`${server.url}/orders`, { method: 'POST', ...request(key) })).text();
for (let round = 0; round < 3; round++) {
  const order = Object.entries(servers);
  if (round % 2) order.reverse();
  for (const [name, server] of order) {
    const result = await autocannon({
      url: server.url,
      connections: Number(connections),
      duration: 2,
      idReplacement: op === 'first',
      requests: op === 'first' ? [request(`r${round}${name}-[<id>]`)] : keys.map(request),
    });
    const { p50, p90, p99, max } = result.latency;
    console.log(
      `${name.padEnd(5)} ${op} c=${connections}: ${Math.round(result.requests.total / result.duration)}/s, latency ms p50 ${p50} p90 ${p90} p99 ${p99} max ${max}, ${result.non2xx} non-2xx, ${result.errors} errors`,
    );
  }
}
for (const server of Object.values(servers)) server.child.disconnect();
