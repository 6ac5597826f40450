/**
 * System calls of one server of the HTTP suite's endpoint over a number of requests
 * (`strace -c -f` attached to it, 4 connections): how many writes a response takes (one
 * `writev` when status line, headers and body go out together), and reads, epoll waits and
 * timers per request. Needs `strace`.
 *
 *   node profile/strace-probe.mjs <hono|express|fastify> <plain|/abs/path/to/packages> [first|replay] [requests]
 */
import { fork, spawn } from 'node:child_process';
import autocannon from 'autocannon';

const [framework = 'fastify', root = 'plain', op = 'first', amount = '2000'] =
  process.argv.slice(2);
const serveFile = new URL('./http-serve.mjs', import.meta.url).pathname;
const BODY = JSON.stringify({ sku: 'A-1', qty: 2 });
const request = (key) => ({
  method: 'POST',
  path: '/orders',
  headers: { 'content-type': 'application/json', 'idempotency-key': key },
  body: BODY,
});
const keys = Array.from({ length: 64 }, (_, i) => `replay-${i}`);
const child = fork(serveFile, [framework, root], { stdio: 'inherit' });
const { port, pid } = await new Promise((resolve) => child.once('message', resolve));
const url = `http://127.0.0.1:${port}`;
const load = (prefix, count) =>
  autocannon({
    url,
    connections: 4,
    amount: count,
    idReplacement: op === 'first',
    requests: op === 'first' ? [request(`${prefix}-[<id>]`)] : keys.map(request),
  });
for (const key of keys)
  await (await fetch(`${url}/orders`, { method: 'POST', ...request(key) })).text();
await load('warm', 2000);
const strace = spawn('strace', ['-c', '-f', '-p', String(pid)], {
  stdio: ['ignore', 'inherit', 'inherit'],
});
await new Promise((resolve) => setTimeout(resolve, 500));
await load('measured', Number(amount));
console.log(`${framework} ${root} ${op}: ${amount} requests`);
strace.kill('SIGINT');
await new Promise((resolve) => strace.once('exit', resolve));
child.disconnect();
