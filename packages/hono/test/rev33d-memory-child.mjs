// Run by rev33d-memory.test.ts in a child process with --expose-gc (the built package, dist/).
// argv[2]: mode. Prints one JSON line: contexts/requests made and still alive after gc, heap after
// gc at a checkpoint and at the end of the run (same-key replays: the store holds one record).
import { setTimeout as sleep } from 'node:timers/promises';
import { createMemoryStore } from '@idem/store-memory';
import { Hono } from 'hono';
import { timeout } from 'hono/timeout';
import { idempotency } from '../dist/index.js';

const mode = process.argv[2];
const total = Number(process.argv[3] ?? 20000);
const gc = globalThis.gc;
if (typeof gc !== 'function') throw new Error('run with --expose-gc');

let made = 0;
let freed = 0;
const registry = new FinalizationRegistry(() => {
  freed += 1;
});

const app = new Hono();
app.use(async (c, next) => {
  made += 1;
  registry.register(c, 0);
  registry.register(c.req.raw, 0);
  made += 1;
  await next();
});
if (mode === 'timeout' || mode === 'overtaken') app.use(timeout(mode === 'overtaken' ? 5 : 5000));
app.use(
  idempotency({
    store: createMemoryStore(),
    scope: 'global',
    onWarning: () => {},
    ...(mode === 'wait' ? { wait: { timeoutMs: 2000 } } : {}),
  }),
);
app.post('/m', async (c) => {
  if (mode === 'overtaken') await sleep(20);
  if (mode === 'stream') {
    let i = 0;
    return c.body(
      new ReadableStream({
        pull(controller) {
          i += 1;
          if (i > 2) controller.close();
          else controller.enqueue(new TextEncoder().encode(`part ${i}`));
        },
      }),
      201,
    );
  }
  return c.json({ ok: true, key: c.get('idempotency')?.key }, 201);
});

const shared = `shared-${process.pid}`;
let sequence = 0;
async function one(sameKey) {
  sequence += 1;
  const response = await app.fetch(
    new Request('http://idem.test/m', {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        'idempotency-key': sameKey ? shared : `k-${sequence}`,
      },
      body: '{"a":1}',
    }),
  );
  await response.arrayBuffer();
  return response.status;
}

async function settle() {
  for (let i = 0; i < 6; i += 1) {
    gc();
    await sleep(20);
  }
  return process.memoryUsage().heapUsed;
}

const batch = 200;
const statuses = {};
async function run(count, sameKey) {
  for (let sent = 0; sent < count; sent += batch) {
    const got = await Promise.all(Array.from({ length: batch }, () => one(sameKey)));
    for (const status of got) statuses[status] = (statuses[status] ?? 0) + 1;
  }
}

// Unique keys: every context and request must be collectable (the store keeps records, not them).
await run(total, false);
// Overtaken handlers end after their 504 went out: let them.
await sleep(100);
await settle();
const uniqueAlive = made - freed;
// Same key: the first records, the rest replay; the heap must not grow per request.
await run(2000, true);
const checkpoint = await settle();
await run(total, true);
await sleep(100);
const end = await settle();
process.stdout.write(
  `${JSON.stringify({ mode, made, alive: made - freed, uniqueAlive, checkpoint, end, statuses })}\n`,
);
