// The app every runtime serves: Hono with @idem/hono on the memory store, imported as the
// built packages. Plain JavaScript, so Node 20 runs it as it is; Bun and Deno too, and
// workerd after bundling.
import * as core from '@idem/core';
import { idempotency } from '@idem/hono';
import { createMemoryStore } from '@idem/store-memory';
import { Hono } from 'hono';
import { streamSSE } from 'hono/streaming';
import { derivations } from './vectors.mjs';

/** Longest a gated handler waits for its gate to open before it answers anyway. */
const GATE_LIMIT_MS = 45_000;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Which runtime serves: its own name for itself, checked by the tests (never silently Node). */
function runtimeName() {
  if (globalThis.Bun) return `bun-${globalThis.Bun.version}`;
  if (globalThis.Deno) return `deno-${globalThis.Deno.version.deno}`;
  if (globalThis.navigator?.userAgent === 'Cloudflare-Workers') return 'workerd';
  return `node-${globalThis.process?.version}`;
}

/** A fresh app with its own store and counters. */
export function createApp() {
  const app = new Hono();
  // Gates are plain shared state polled on timers: workerd forbids settling a promise of one
  // request from another.
  const openGates = new Set();
  const waiting = new Set();
  let executions = 0;

  app.get('/runtime', async (c) => {
    // Node 20.0–20.15 take node:crypto by an import started when core loaded.
    await core.sha256Settled;
    return c.json({
      runtime: runtimeName(),
      nativeHash: core.sha256Implementation() === 'node:crypto',
      buffer: typeof globalThis.Buffer === 'function',
    });
  });
  app.get('/vectors', (c) => c.json(derivations(core)));
  app.get('/gates/:gate', (c) => c.json({ waiting: waiting.has(c.req.param('gate')) }));
  app.post('/gates/:gate', (c) => {
    openGates.add(c.req.param('gate'));
    return c.body(null, 204);
  });

  app.use('/api/*', idempotency({ store: createMemoryStore(), scope: 'global' }));
  app.post('/api/charges', async (c) => {
    const { amount } = await c.req.json();
    executions += 1;
    c.header('x-executions', String(executions));
    return c.json({ execution: executions, amount, fence: c.get('idempotency')?.fence }, 201);
  });
  app.post('/api/gated/:gate', async (c) => {
    const gate = c.req.param('gate');
    const until = Date.now() + GATE_LIMIT_MS;
    waiting.add(gate);
    while (!openGates.has(gate) && Date.now() < until) await sleep(5);
    waiting.delete(gate);
    executions += 1;
    return c.json({ execution: executions, opened: openGates.has(gate) }, 201);
  });
  app.post('/api/bytes', (c) => {
    executions += 1;
    // Every byte value, 0x80–0x9f included (where windows-1252 differs from Latin-1): the
    // store holds outcomes as Latin-1 strings where there is a Buffer, else as bytes.
    const body = Uint8Array.from({ length: 1_024 }, (_, i) => (i + executions) & 0xff);
    return c.body(body, 201, { 'content-type': 'application/octet-stream' });
  });
  app.post('/api/completions', (c) => {
    executions += 1;
    const execution = executions;
    return streamSSE(c, async (stream) => {
      for (const token of ['Hel', 'lo', ', ', 'wörld']) {
        await stream.writeSSE({ event: 'token', data: JSON.stringify({ token, execution }) });
        await sleep(2);
      }
      await stream.writeSSE({ event: 'done', data: '[DONE]' });
    });
  });
  return app;
}
