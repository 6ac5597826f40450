/** Self time of a `.cpuprofile` by package (URL): `node profile/by-package.mjs FILE`. */
import { readFileSync } from 'node:fs';

const profile = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const byId = new Map(profile.nodes.map((n) => [n.id, n]));
const parent = new Map();
for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
const label = (url) => {
  if (!url) return null;
  const m =
    /packages\/([^/]+)\/dist|node_modules\/(?:\.pnpm\/[^/]+\/node_modules\/)?((?:@[^/]+\/)?[^/]+)/.exec(
      url,
    );
  if (m) return m[1] ? `@idem/${m[1]}` : m[2];
  if (url.startsWith('node:')) return 'node internals';
  return url.split('/').pop();
};
const totals = new Map();
let total = 0;
profile.samples.forEach((id, i) => {
  const dt = profile.timeDeltas[i] ?? 0;
  total += dt;
  let n = byId.get(id);
  const name = n.callFrame.functionName;
  let what = label(n.callFrame.url);
  // Native frames (no URL) count for the nearest JS caller's package, GC and idle stand alone.
  while (what === null && n && !['(garbage collector)', '(idle)', '(program)'].includes(name)) {
    n = byId.get(parent.get(n.id));
    if (!n) break;
    what = label(n.callFrame.url);
  }
  what ??= name || '(native)';
  totals.set(what, (totals.get(what) ?? 0) + dt);
});
for (const [k, v] of [...totals].sort((a, b) => b[1] - a[1]).slice(0, 15))
  console.log(`${((100 * v) / total).toFixed(1).padStart(5)} %  ${k}`);
