/**
 * CPU time of the SERVER process per request (utime + stime from /proc/<pid>/stat), for the
 * HTTP suite's endpoint on one framework: without middleware, with idem from `--before`
 * (another built checkout's `packages`) and with idem from `--after` (this checkout), in
 * alternating rounds. CPU per request does not depend on how busy the shared machine is the
 * way requests per second do.
 *
 *   node profile/http-ab.mjs --before /copy/of/packages [--after ../packages] \
 *     [--framework fastify] [--op first|replay] [--requests 20000] [--rounds 5] [--connections 32]
 *
 * `--profile DIR` also writes a CPU profile of each server into DIR (list it with
 * `node profile/top.mjs DIR/<file>.cpuprofile`).
 * Prints each round and the median µs per request of each server, and idem's over plain's.
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import autocannon from 'autocannon';
import { replayKeys as keys, prime, request, startServer } from './orders-client.mjs';

const { values } = parseArgs({
  options: {
    before: { type: 'string' },
    after: { type: 'string', default: new URL('../../packages', import.meta.url).pathname },
    framework: { type: 'string', default: 'fastify' },
    op: { type: 'string', default: 'first' },
    requests: { type: 'string', default: '20000' },
    rounds: { type: 'string', default: '5' },
    connections: { type: 'string', default: '32' },
    profile: { type: 'string' },
  },
});
const requests = Number(values.requests);
const rounds = Number(values.rounds);
const connections = Number(values.connections);

function cpuMicros(pid) {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  // utime and stime are fields 14 and 15 (1-based), 12 and 13 after the ') ' split.
  // minflt is field 10 (index 7): pages the process touched for the first time.
  return {
    user: (Number(fields[11]) * 1e6) / 100,
    system: (Number(fields[12]) * 1e6) / 100,
    faults: Number(fields[7]),
  };
}

async function start(label, root) {
  // --profile DIR: the idem servers write a CPU profile (`node --cpu-prof`) there on exit.
  const execArgv = values.profile ? ['--cpu-prof', `--cpu-prof-dir=${values.profile}`] : [];
  return { label, ...(await startServer(values.framework, root, execArgv)) };
}

let batch = 0;

async function measure(server, amount) {
  batch++;
  if (values.op === 'replay' && !server.primed) {
    await prime(server.url);
    server.primed = true;
  }
  const before = cpuMicros(server.pid);
  const result = await autocannon({
    url: server.url,
    connections,
    amount,
    idReplacement: values.op === 'first',
    requests:
      values.op === 'first' ? [request(`b${batch}-[<id>]`)] : keys.map((key) => request(key)),
  });
  const after = cpuMicros(server.pid);
  const used = after.user + after.system - before.user - before.system;
  const system = after.system - before.system;
  const faults = after.faults - before.faults;
  if ((result.errors || result.timeouts || result.non2xx) && !values.profile)
    throw new Error(`${server.label}: ${result.errors} errors, ${result.non2xx} non-2xx`);
  const total = result.requests.total;
  return {
    perRequest: used / total,
    system: system / total,
    faults: faults / total,
    rps: result.requests.average,
  };
}

const servers = [await start('plain', 'plain'), await start('after', values.after)];
if (values.before) servers.splice(1, 0, await start('before', values.before));
for (const server of servers) await measure(server, Math.min(5000, requests)); // warm-up
const figures = Object.fromEntries(servers.map((s) => [s.label, []]));
const systemFigures = Object.fromEntries(servers.map((s) => [s.label, []]));
for (let r = 0; r < rounds; r++) {
  const order = servers.map((_, i) => servers[(i + r) % servers.length]);
  const line = [];
  for (const server of order) {
    const { perRequest, system, faults, rps } = await measure(server, requests);
    figures[server.label].push(perRequest);
    systemFigures[server.label].push(system);
    line.push(
      `${server.label} ${perRequest.toFixed(1)} µs (kernel ${system.toFixed(1)}, ${faults.toFixed(3)} page faults, ${Math.round(rps)}/s)`,
    );
  }
  console.log(`round ${r + 1}: ${line.join(', ')}`);
}
const median = (list) => [...list].sort((a, b) => a - b)[Math.floor(list.length / 2)];
const load = readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
const plain = median(figures.plain);
console.log(
  `${values.framework} ${values.op}, ${requests} requests x ${rounds} rounds, load ${load}`,
);
for (const server of servers) {
  const m = median(figures[server.label]);
  const system = median(systemFigures[server.label]);
  console.log(
    `  ${server.label.padEnd(6)} ${m.toFixed(1)} µs/request CPU (kernel ${system.toFixed(1)}), plain/${server.label} = ${(plain / m).toFixed(2)}`,
  );
}
for (const server of servers) server.child.disconnect();
