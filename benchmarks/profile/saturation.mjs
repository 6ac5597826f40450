/**
 * The HTTP suite's servers (`src/http-server.ts`, as `pnpm bench` starts them) driven the way
 * the suite drives them (autocannon, 64 connections, 2 s a measurement, alternating rounds),
 * with what the suite does not print: how busy each server was (its main thread, all its
 * threads), how busy the load generator was, and the server's main-thread CPU per request
 * (kernel part apart). A server whose main thread is not near 100 % was waiting, not working.
 *
 *   node profile/saturation.mjs <hono|express|fastify> [rounds] [first|replay] [modes...]
 *
 * Modes as the suite's (`plain`, `idem`, `express-idempotency`); default `plain idem`. A mode
 * given as `MODE@RATE` (`plain@18000`) is driven at most at RATE requests a second in all
 * (autocannon's `overallRate`): the same server at another's throughput, to tell what a
 * request costs a server at that load from what it costs at its own (a server answering fewer
 * requests a second batches less and wakes a more idle client more often).
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import autocannon from 'autocannon';

const [framework = 'express', roundsText = '4', op = 'first', ...given] = process.argv.slice(2);
const modes = given.length > 0 ? given : ['plain', 'idem'];
const serverFile = new URL('../src/http-server.ts', import.meta.url).pathname;
/** µs a clock tick of /proc (USER_HZ 100). */
const TICK = 1e4;
const BODY = JSON.stringify({ sku: 'A-1', qty: 2 });
const request = (key) => ({
  method: 'POST',
  path: '/orders',
  headers: { 'content-type': 'application/json', 'idempotency-key': key },
  body: BODY,
});
const replayKeys = Array.from({ length: 64 }, (_, j) => `replay-${j}`);

/** utime and stime (µs) of one thread (`task`), or of the whole process. */
function times(pid, task) {
  const path = task === undefined ? `/proc/${pid}/stat` : `/proc/${pid}/task/${task}/stat`;
  const fields = readFileSync(path, 'utf8').split(') ')[1].split(' ');
  return { user: Number(fields[11]) * TICK, system: Number(fields[12]) * TICK };
}

const servers = [];
for (const given of modes) {
  const [mode, rateText] = given.split('@');
  const rate = rateText === undefined ? undefined : Number(rateText);
  if (rate !== undefined && !(Number.isInteger(rate) && rate > 0))
    throw new Error(`${given}: a rate is a positive whole number of requests a second`);
  const child = spawn(process.execPath, ['--import', 'tsx', serverFile, framework, mode], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const { port } = await new Promise((resolve) => child.once('message', resolve));
  servers.push({ mode: given, rate, child, url: `http://127.0.0.1:${port}`, rows: [] });
}
const load = (server, seconds) =>
  autocannon({
    url: server.url,
    connections: 64,
    ...(server.rate === undefined ? {} : { overallRate: server.rate }),
    duration: seconds,
    sampleInt: 250,
    idReplacement: op === 'first',
    requests: op === 'first' ? [request('bench-[<id>]')] : replayKeys.map(request),
  });
if (op === 'replay')
  for (const server of servers)
    for (const key of replayKeys)
      await (await fetch(`${server.url}/orders`, { method: 'POST', ...request(key) })).text();
for (const server of servers) await load(server, 2); // warm-up

for (let round = 0; round < Number(roundsText); round++) {
  for (let i = 0; i < servers.length; i++) {
    const server = servers[(i + round) % servers.length];
    const pid = server.child.pid;
    const before = { main: times(pid, pid), all: times(pid), self: process.cpuUsage() };
    const started = performance.now();
    const result = await load(server, 2);
    const wall = (performance.now() - started) * 1000;
    const after = { main: times(pid, pid), all: times(pid), self: process.cpuUsage(before.self) };
    if (result.non2xx || result.errors || result.timeouts)
      throw new Error(`${server.mode}: ${result.non2xx} non-2xx, ${result.errors} errors`);
    const n = result.requests.total;
    const main = after.main.user + after.main.system - before.main.user - before.main.system;
    const all = after.all.user + after.all.system - before.all.user - before.all.system;
    server.rows.push({
      rps: n / result.duration,
      main: main / wall,
      all: all / wall,
      generator: (after.self.user + after.self.system) / wall,
      perRequest: main / n,
      kernel: (after.main.system - before.main.system) / n,
    });
  }
}
const median = (rows, field) =>
  rows.map((row) => row[field]).sort((a, b) => a - b)[Math.floor(rows.length / 2)];
const pct = (x) => `${(100 * x).toFixed(0)} %`;
console.log(`${framework} ${op}, ${roundsText} rounds of 2 s, 64 connections (medians)`);
for (const { mode, rows } of servers) {
  console.log(
    `  ${mode.padEnd(20)} ${median(rows, 'rps').toFixed(0)} requests/s; server main thread ${pct(median(rows, 'main'))}, all threads ${pct(median(rows, 'all'))}; load generator ${pct(median(rows, 'generator'))}; main-thread CPU ${median(rows, 'perRequest').toFixed(1)} µs a request (kernel ${median(rows, 'kernel').toFixed(1)})`,
  );
}
for (const server of servers) server.child.kill();
