// Bytes allocated per request by `begin()` and the recorder (first executions or replays),
// by allocating function: V8's sampling heap profiler with the objects later collected
// counted too, over 20,000 requests after as many to warm up. On the memory store,
// `scope: 'global'`, the HTTP suite's small JSON request.
//   node bench/alloc.mjs [first|replay]
import { Session } from 'node:inspector/promises';
import { ordersRequest } from './orders.mjs';

const mode = process.argv[2] ?? 'first';
const one = ordersRequest();

const count = 20_000;
for (let i = 0; i < count; i++) await one(mode === 'first' ? `w-${i}` : 'r');
const session = new Session();
session.connect();
await session.post('HeapProfiler.startSampling', {
  samplingInterval: 64,
  includeObjectsCollectedByMajorGC: true,
  includeObjectsCollectedByMinorGC: true,
});
for (let i = 0; i < count; i++) await one(mode === 'first' ? `k-${i}` : 'r');
const { profile } = await session.post('HeapProfiler.stopSampling');
const bytes = new Map();
(function walk(node) {
  const frame = node.callFrame;
  const name = `${frame.functionName || '(anonymous)'} ${frame.url.split('/').slice(-2).join('/')}:${frame.lineNumber + 1}`;
  if (node.selfSize) bytes.set(name, (bytes.get(name) ?? 0) + node.selfSize);
  for (const child of node.children) walk(child);
})(profile.head);
let total = 0;
for (const size of bytes.values()) total += size;
console.log(
  `${mode}: ${(total / count).toFixed(0)} bytes allocated a request (sampled; this script's own included)`,
);
for (const [name, size] of [...bytes].sort((a, b) => b[1] - a[1]).slice(0, 25))
  console.log(`${(size / count).toFixed(0).padStart(6)} B  ${name}`);
