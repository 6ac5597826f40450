// Top functions of a V8 .cpuprofile (node --cpu-prof) by self time, and the share of the
// samples under frames whose URL matches a filter (default: the @idem packages).
//   node bench/cpu-top.mjs FILE.cpuprofile [--top 30] [--match /packages/]
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    top: { type: 'string', default: '30' },
    match: { type: 'string', default: '/packages/' },
    callers: { type: 'string' },
    // Charge each sample to the innermost frame whose URL matches: what that function costs
    // with the platform calls it makes, without the calls into other matching functions.
    own: { type: 'string' },
  },
});
const profile = JSON.parse(readFileSync(positionals[0], 'utf8'));
const byId = new Map(profile.nodes.map((node) => [node.id, node]));
const parent = new Map();
for (const node of profile.nodes)
  for (const child of node.children ?? []) parent.set(child, node.id);

// Sample time: each sample lasts its time delta.
const selfTime = new Map();
let total = 0;
profile.samples.forEach((id, i) => {
  const dt = profile.timeDeltas[i] ?? 0;
  selfTime.set(id, (selfTime.get(id) ?? 0) + dt);
  total += dt;
});

const label = ({ callFrame: f }) =>
  `${f.functionName || '(anonymous)'} ${f.url.replace(/^.*\/(node_modules|packages)\//, '$1/')}:${f.lineNumber + 1}`;
const self = new Map();
const inclusive = new Map();
let idle = 0;
let matched = 0;
for (const [id, time] of selfTime) {
  const node = byId.get(id);
  const name = label(node);
  if (node.callFrame.functionName === '(idle)') idle += time;
  self.set(name, (self.get(name) ?? 0) + time);
  // Inclusive: once per distinct label on the stack.
  const seen = new Set();
  let hit = false;
  for (let at = id; at !== undefined; at = parent.get(at)) {
    const frame = byId.get(at);
    const l = label(frame);
    if (frame.callFrame.url.includes(values.match)) hit = true;
    if (seen.has(l)) continue;
    seen.add(l);
    inclusive.set(l, (inclusive.get(l) ?? 0) + time);
  }
  if (hit) matched += time;
}
const busy = total - idle;
const pct = (t) => `${((100 * t) / busy).toFixed(1)}%`.padStart(6);
console.log(
  `busy ${(busy / 1e6).toFixed(2)} s (idle ${(idle / 1e6).toFixed(2)} s); under ${values.match}: ${pct(matched)}`,
);
console.log('\nself time (share of busy):');
for (const [name, t] of [...self].sort((a, b) => b[1] - a[1]).slice(0, Number(values.top)))
  console.log(`${pct(t)}  ${name}`);
console.log(`\ninclusive, frames under ${values.match}:`);
for (const [name, t] of [...inclusive]
  .filter(([name]) => name.includes('packages/'))
  .sort((a, b) => b[1] - a[1])
  .slice(0, Number(values.top)))
  console.log(`${pct(t)}  ${name}`);

// --callers NAME: the stacks (5 frames up) that spend self time in functions named NAME.
if (values.callers) {
  const stacks = new Map();
  for (const [id, time] of selfTime) {
    if (byId.get(id).callFrame.functionName !== values.callers) continue;
    const frames = [];
    for (let at = parent.get(id); at !== undefined && frames.length < 6; at = parent.get(at))
      frames.push(label(byId.get(at)));
    const key = frames.join(' < ');
    stacks.set(key, (stacks.get(key) ?? 0) + time);
  }
  console.log(`\ncallers of ${values.callers}:`);
  for (const [key, t] of [...stacks].sort((a, b) => b[1] - a[1]).slice(0, 12))
    console.log(`${pct(t)}  ${key}`);
}

if (values.own) {
  const own = new Map();
  let charged = 0;
  for (const [id, time] of selfTime) {
    for (let at = id; at !== undefined; at = parent.get(at)) {
      const frame = byId.get(at);
      if (!new RegExp(values.own).test(frame.callFrame.url)) continue;
      const name = label(frame);
      own.set(name, (own.get(name) ?? 0) + time);
      charged += time;
      break;
    }
  }
  console.log(`\ncharged to the innermost frame matching ${values.own} (${pct(charged)} in all):`);
  for (const [name, t] of [...own].sort((a, b) => b[1] - a[1]).slice(0, Number(values.top)))
    console.log(`${pct(t)}  ${name}`);
}
