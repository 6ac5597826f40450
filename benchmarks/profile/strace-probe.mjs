/**
 * System calls of one server of the HTTP suite's endpoint over a number of requests
 * (`strace -c -f` attached to it, 4 connections): how many writes a response takes (one
 * `writev` when status line, headers and body go out together), and reads, epoll waits and
 * timers per request. Needs `strace`.
 *
 *   node profile/strace-probe.mjs <hono|express|fastify> <plain|/abs/path/to/packages> [first|replay] [requests]
 */
import { spawn } from 'node:child_process';
import autocannon from 'autocannon';
import { replayKeys as keys, prime, request, startServer } from './orders-client.mjs';

const [framework = 'fastify', root = 'plain', op = 'first', amount = '2000'] =
  process.argv.slice(2);
const { child, pid, url } = await startServer(framework, root);
const load = (prefix, count) =>
  autocannon({
    url,
    connections: 4,
    amount: count,
    idReplacement: op === 'first',
    requests: op === 'first' ? [request(`${prefix}-[<id>]`)] : keys.map(request),
  });
await prime(url);
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
