/** Lists the functions of a `.cpuprofile` by self time: `node profile/top.mjs FILE [rows]`. */
import { readFileSync } from 'node:fs';

const [file, rowsText = '40'] = process.argv.slice(2);
const profile = JSON.parse(readFileSync(file, 'utf8'));
const byId = new Map(profile.nodes.map((n) => [n.id, n]));
const self = new Map();
const dt = profile.timeDeltas;
let total = 0;
profile.samples.forEach((id, i) => {
  const n = byId.get(id);
  const f = n.callFrame;
  const name = `${f.functionName || '(anon)'} ${f.url.split('/').slice(-2).join('/')}:${f.lineNumber + 1}`;
  self.set(name, (self.get(name) ?? 0) + (dt[i] ?? 0));
  total += dt[i] ?? 0;
});
const rows = [...self].sort((a, b) => b[1] - a[1]).slice(0, Number(rowsText));
for (const [name, t] of rows)
  console.log(`${((100 * t) / total).toFixed(1).padStart(5)} %  ${name}`);
