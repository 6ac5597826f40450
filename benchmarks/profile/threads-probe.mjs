/**
 * CPU of each thread of an HTTP suite server (main thread, V8 GC helpers, libuv pool) per
 * request, and its resident memory, over a number of requests: where a server's CPU goes that
 * a `--cpu-prof` profile (main thread only) does not show.
 *
 *   node profile/threads-probe.mjs <hono|express|fastify> [first|replay] [requests] [packages...]
 */
import { readdirSync, readFileSync } from 'node:fs';
import autocannon from 'autocannon';
import { replayKeys as keys, prime, request, startServer } from './orders-client.mjs';

const [framework = 'fastify', op = 'first', amountText = '20000', ...roots] = process.argv.slice(2);
const amount = Number(amountText);
const tick = 1e6 / 100;

function threads(pid) {
  const out = {};
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    const comm = readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim();
    const f = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8').split(') ')[1].split(' ');
    const name = tid === String(pid) ? 'main' : comm.replace(/\d+$/, '');
    const t = out[name] ?? { user: 0, system: 0 };
    t.user += Number(f[11]) * tick;
    t.system += Number(f[12]) * tick;
    out[name] = t;
  }
  return out;
}
const rss = (pid) => /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1] / 1024;

let batch = 0;
for (const root of roots.length
  ? roots
  : ['plain', new URL('../../packages', import.meta.url).pathname]) {
  const { child, pid, url } = await startServer(framework, root);
  const load = (count) =>
    autocannon({
      url,
      connections: 32,
      amount: count,
      idReplacement: op === 'first',
      requests: op === 'first' ? [request(`t${++batch}-[<id>]`)] : keys.map(request),
    });
  if (op === 'replay') await prime(url);
  await load(5000);
  const before = threads(pid);
  const rssBefore = rss(pid);
  await load(amount);
  const after = threads(pid);
  const line = Object.entries(after)
    .map(([name, t]) => {
      const b = before[name] ?? { user: 0, system: 0 };
      const u = (t.user - b.user) / amount;
      const s = (t.system - b.system) / amount;
      return u + s > 0.05 ? `${name} ${u.toFixed(1)}+${s.toFixed(1)}` : null;
    })
    .filter(Boolean)
    .join(', ');
  console.log(
    `${framework} ${op} ${root === 'plain' ? 'plain' : root}: µs/request user+system: ${line}; RSS ${rssBefore.toFixed(0)} -> ${rss(pid).toFixed(0)} MiB`,
  );
  child.disconnect();
}
