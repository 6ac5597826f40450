// Repro (package @idem/hono, and @idem/http's default operation): the operation of a key is
// `${method} ${url.pathname}` as spelled, not the route Hono matched. Hono decodes the path
// to route it, so POST /charges and POST /%63harges reach one handler, yet they derive two
// storage keys: the same Idempotency-Key executes the handler twice. (DESIGN.md: "The
// operation identity is the route the framework matched, not the raw path spelling.")
// Run: node apps/llm-api/test/repro/hono-path-variant.mjs
import { idempotency } from '@idem/hono';
import { createMemoryStore } from '@idem/store-memory';
import { Hono } from 'hono';

let executions = 0;
const app = new Hono();
app.post(
  '/charges',
  idempotency({ store: createMemoryStore(), scope: () => ({ principal: 'tenant-1' }) }),
  (c) => {
    executions += 1;
    return c.json({ charge: executions }, 201);
  },
);
const send = (path) =>
  app.request(path, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'idempotency-key': 'k-1' },
    body: '{"amount":100}',
  });
const a = await send('/charges');
const b = await send('/%63harges');
console.log(
  `POST /charges -> ${a.status}, POST /%63harges -> ${b.status} (replayed: ${b.headers.get('idempotent-replayed')})`,
);
console.log(
  executions === 1 ? 'OK: one execution' : `BROKEN: ${executions} executions for one key`,
);
