/**
 * Latency and requests/s of the HTTP suite's endpoint without middleware (`plain`) and with
 * idem's adapter from a built `packages` folder, in alternating rounds of 2 s each: whether
 * idem makes the server wait (timers, split writes, Nagle / delayed-ACK stalls show as
 * latency far above the added CPU, 40 ms steps with one connection) or only work more.
 *
 *   node profile/lat-probe.mjs <hono|express|fastify> /abs/path/to/packages [first|replay] [connections]
 */
import autocannon from 'autocannon';
import { replayKeys as keys, prime, request, startServer } from './orders-client.mjs';

const [framework = 'fastify', root, op = 'replay', connections = '1'] = process.argv.slice(2);
if (!root)
  throw new Error('usage: lat-probe.mjs <framework> /abs/path/to/packages [op] [connections]');

const servers = {
  plain: await startServer(framework, 'plain'),
  idem: await startServer(framework, root),
};
for (const server of Object.values(servers)) await prime(server.url);
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
