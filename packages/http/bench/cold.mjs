// What `begin()` and the recorder cost when the caches are cold, as in a server, where the
// framework's and Node's own work between two requests pushes idem's code and data out of
// the CPU caches: each timed request comes after a walk over a buffer larger than the caches
// (`MB`, default 8) and calls of many distinct small functions (`FNS`, default 400), or with
// nothing in between (hot, as in a tight loop like bench/begin.mjs). CPU time of the request
// alone. On the memory store, `scope: 'global'`, the HTTP suite's small JSON request.
//   node bench/cold.mjs            MB=0 node bench/cold.mjs (code only)   FNS=0 (data only)
import { ordersRequest } from './orders.mjs';

const one = ordersRequest();
let serial = 0;

const data = new Uint32Array((Number(process.env.MB ?? 8) * 1024 * 1024) / 4);
const functions = Array.from(
  { length: Number(process.env.FNS ?? 400) },
  (_, i) =>
    new Function(
      'x',
      `let s = ${i}; for (let j = 0; j < 4; j++) s = (s * 31 + x + j) | 0; return s;`,
    ),
);
let sink = 0;
function evict() {
  for (let i = 0; i < data.length; i += 16) sink += data[i];
  for (const f of functions) sink += f(sink & 7);
}

async function timed(op, cold, count) {
  let used = 0;
  for (let i = 0; i < count; i++) {
    if (cold) evict();
    const start = process.cpuUsage();
    await one(op === 'replay' ? `r-${i % 64}` : `k-${serial++}`);
    const spent = process.cpuUsage(start);
    used += spent.user + spent.system;
  }
  return used / count;
}

for (let i = 0; i < 64; i++) await one(`r-${i}`);
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
for (const op of ['replay', 'first']) {
  await timed(op, false, 3000);
  await timed(op, true, 300);
  const hot = [];
  const cold = [];
  for (let round = 0; round < 5; round++) {
    hot.push(await timed(op, false, 3000));
    cold.push(await timed(op, true, 3000));
  }
  console.log(
    `${op}: hot ${median(hot).toFixed(1)} µs, cold ${median(cold).toFixed(1)} µs (CPU a request, median of 5 alternating rounds)`,
  );
}
if (sink === 0.5) console.log(sink);
