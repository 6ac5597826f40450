import { Session } from 'node:inspector/promises';
import { writeFileSync } from 'node:fs';
const session = new Session(); session.connect();
await session.post('HeapProfiler.enable');
process.argv.push('--rounds', '1', '--count', '20000', '--modes', process.env.MODE ?? 'first');
await session.post('HeapProfiler.startSampling', { samplingInterval: 256, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true });
await import('./begin.mjs');
const { profile } = await session.post('HeapProfiler.stopSampling');
// aggregate self size by function
const self = new Map(); let total = 0;
(function walk(n) { const f = n.callFrame; const k = `${f.functionName || '(anon)'} ${f.url.split('/').slice(-2).join('/')}:${f.lineNumber + 1}`; self.set(k, (self.get(k) ?? 0) + n.selfSize); total += n.selfSize; for (const c of n.children) walk(c); })(profile.head);
console.log('total sampled MB', (total / 1e6).toFixed(1), ' per request bytes ~', Math.round(total / 20000 / 1));
const parents = new Map(); (function walk(n, parent) { const f = n.callFrame; if (f.functionName === (process.env.WHO ?? 'sort')) { const pf = parent.callFrame; const k = `${pf.functionName} ${pf.url.split('/').slice(-2).join('/')}:${pf.lineNumber + 1}`; parents.set(k, (parents.get(k) ?? 0) + n.selfSize); } for (const c of n.children) walk(c, n); })(profile.head, profile.head);
console.log('callers of', process.env.WHO ?? 'sort', [...parents].map(([k, v]) => `${k}: ${Math.round(v / 20000)} B/req`));
for (const [k, v] of [...self].sort((a, b) => b[1] - a[1]).slice(0, 40)) console.log((100 * v / total).toFixed(1).padStart(5), '%', Math.round(v / 20000), 'B/req', k);
