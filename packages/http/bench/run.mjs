// HTTP overhead of the idempotency layer: requests/s of one endpoint behind the adapter
// against the same endpoint without it, in one run, rounds alternating. Each server runs in
// a child process (`<adapter>/bench/server.mjs`, which prints `{"plain":port,"idem":port}`);
// autocannon drives loopback from this process. Ratios, never absolute speeds, are the
// result: the machine is shared.
//
//   node bench/run.mjs [--adapters express,fastify,hono] [--rounds 3] [--seconds 3]
//                      [--connections 32] [--prof DIR] [--packages DIR]
//
// Modes: `plain` (no middleware), `first` (a fresh key every request: a first execution),
// `replay` (one key recorded before the round: every request a replay). All three send the
// same bytes but for the key, and every request carries a fresh id (autocannon's `[<id>]`),
// so the load generator does the same work in each. `--prof DIR` starts the servers with
// `--cpu-prof` (profiles written to DIR when they exit); read them with bench/cpu-top.mjs.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import autocannon from 'autocannon';

const here = dirname(fileURLToPath(import.meta.url));
const { values } = parseArgs({
  options: {
    adapters: { type: 'string', default: 'hono,express,fastify' },
    rounds: { type: 'string', default: '3' },
    seconds: { type: 'string', default: '3' },
    connections: { type: 'string', default: '32' },
    modes: { type: 'string', default: 'plain,first,replay' },
    prof: { type: 'string' },
    // Another checkout's packages (built), to measure an earlier version the same way.
    packages: { type: 'string', default: resolve(here, '../..') },
  },
});
const rounds = Number(values.rounds);
const seconds = Number(values.seconds);
const connections = Number(values.connections);
const modes = values.modes.split(',');
if (!(rounds >= 1 && rounds <= 20 && seconds > 0 && seconds <= 30 && connections >= 1))
  throw new Error('rounds 1..20, seconds 0..30, connections >= 1');

const BODY = JSON.stringify({
  amount: 4200,
  currency: 'eur',
  customer: 'cus_9f3a7c',
  description: 'Order 1042',
  metadata: { order: 'ord_1042', channel: 'web' },
});

async function startServer(adapter) {
  const script = resolve(values.packages, adapter, 'bench/server.mjs');
  const nodeArgs = values.prof
    ? [
        '--cpu-prof',
        `--cpu-prof-dir=${resolve(values.prof)}`,
        `--cpu-prof-name=${adapter}.cpuprofile`,
      ]
    : [];
  const child = spawn(process.execPath, [...nodeArgs, script], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const [line] = await Promise.race([
    once(child.stdout, 'data'),
    once(child, 'exit').then(([code]) => {
      throw new Error(`${adapter} server exited (${code}) before listening`);
    }),
  ]);
  return { child, ports: JSON.parse(String(line)) };
}

// The server's CPU time (user + system) in clock ticks, from /proc (Linux); NaN elsewhere.
// CPU per request suffers far less than requests/s from other processes on a shared machine.
const TICK_US = 10_000;
function cpuTicks(pid) {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
    return Number(fields[11]) + Number(fields[12]);
  } catch {
    return Number.NaN;
  }
}

async function stopServer({ child }) {
  if (child.exitCode !== null) return;
  child.kill('SIGTERM');
  await once(child, 'exit');
}

function load(port, mode, key, duration = seconds) {
  return autocannon({
    url: `http://127.0.0.1:${port}/charges`,
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      'x-account-id': 'acct_bench',
      'x-request-id': '[<id>]',
      'idempotency-key': mode === 'first' ? '[<id>]' : key,
    },
    body: BODY,
    idReplacement: true,
    connections,
    duration,
  });
}

async function post(port, key) {
  const response = await fetch(`http://127.0.0.1:${port}/charges`, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      'x-account-id': 'acct_bench',
      'idempotency-key': key,
    },
    body: BODY,
  });
  await response.arrayBuffer();
  return response;
}

const median = (list) => {
  const sorted = [...list].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
};

const table = [];
for (const adapter of values.adapters.split(',')) {
  const server = await startServer(adapter);
  try {
    const rps = Object.fromEntries(modes.map((mode) => [mode, []]));
    const cpu = Object.fromEntries(modes.map((mode) => [mode, []]));
    // A short warm-up of each mode, not counted (JIT, pools).
    const warmKey = `warm-${Date.now()}`;
    await post(server.ports.idem, warmKey);
    for (const mode of modes) {
      const port = mode === 'plain' ? server.ports.plain : server.ports.idem;
      const result = await load(port, mode, warmKey, 1);
      if (result.non2xx > 0)
        throw new Error(`${adapter} ${mode}: ${result.non2xx} non-2xx in warm-up`);
    }
    for (let round = 0; round < rounds; round++) {
      // Rotate the order so that no mode always runs first (or right after another).
      const order = modes.map((_, i) => modes[(i + round) % modes.length]);
      for (const mode of order) {
        const key = `replay-${round}-${Date.now()}`;
        if (mode === 'replay') {
          const primed = await post(server.ports.idem, key);
          if (primed.status !== 201)
            throw new Error(`${adapter}: priming answered ${primed.status}`);
        }
        const port = mode === 'plain' ? server.ports.plain : server.ports.idem;
        const ticks = cpuTicks(server.child.pid);
        const result = await load(port, mode, key);
        const cpuUs = ((cpuTicks(server.child.pid) - ticks) * TICK_US) / result.requests.total;
        if (result.non2xx > 0 || result.errors > 0 || result.timeouts > 0)
          throw new Error(
            `${adapter} ${mode}: ${result.non2xx} non-2xx, ${result.errors} errors, ${result.timeouts} timeouts`,
          );
        rps[mode].push(result.requests.average);
        cpu[mode].push(cpuUs);
        console.error(
          `${adapter} round ${round + 1} ${mode}: ${Math.round(result.requests.average)} req/s, ${cpuUs.toFixed(1)} µs CPU/request, p99 ${result.latency.p99} ms`,
        );
      }
    }
    const row = { adapter };
    for (const mode of modes) {
      row[`${mode} req/s`] = Math.round(median(rps[mode]));
      row[`${mode} µs CPU`] = Number(median(cpu[mode]).toFixed(1));
      if (mode === 'plain' || !rps.plain) continue;
      // Each round's figure against the same round's plain one.
      const ratios = rps[mode].map((value, i) => value / rps.plain[i]);
      const cpuRatios = cpu[mode].map((value, i) => cpu.plain[i] / value);
      row[`${mode}/plain req/s`] = Number(median(ratios).toFixed(2));
      row[`${mode}/plain by CPU`] = Number(median(cpuRatios).toFixed(2));
    }
    table.push(row);
  } finally {
    await stopServer(server);
  }
}
console.log(
  `\n${connections} connections, ${rounds} rounds of ${seconds} s a mode, medians; ratios pair each round's figures ("by CPU": the plain server's CPU time per request over this one's)`,
);
console.table(table);
