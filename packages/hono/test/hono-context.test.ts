import { createMemoryStore } from '@idem/store-memory';
import { Hono } from 'hono';
import { streamSSE } from 'hono/streaming';
import { describe, expect, it } from 'vitest';
import { type IdempotencyVariables, idempotency } from '../src/index.js';

describe('@idem/hono conventions', () => {
  it('guards only the paths it is mounted on and exposes c.get("idempotency")', async () => {
    let runs = 0;
    const app = new Hono<{ Variables: IdempotencyVariables }>();
    app.use(
      '/api/*',
      idempotency({
        store: createMemoryStore(),
        scope: (c) => ({ principal: c.req.header('x-user') ?? 'anonymous' }),
      }),
    );
    app.post('/api/jobs', async (c) => {
      runs++;
      const body = await c.req.json();
      return c.json({ run: runs, fence: c.get('idempotency')?.fence, body }, 202);
    });
    app.post('/open', (c) => c.text(`open ${++runs}`));
    const request = (path: string, key?: string) =>
      app.request(path, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'x-user': 'u1',
          ...(key ? { 'idempotency-key': key } : {}),
        },
        body: JSON.stringify({ n: 1 }),
      });
    expect((await request('/api/jobs')).status).toBe(400);
    const first = await request('/api/jobs', 'j1');
    expect(first.status).toBe(202);
    expect(await first.json()).toEqual({ run: 1, fence: 1, body: { n: 1 } });
    const again = await request('/api/jobs', 'j1');
    expect(again.headers.get('idempotent-replayed')).toBe('true');
    expect(await again.json()).toEqual({ run: 1, fence: 1, body: { n: 1 } });
    expect(await (await request('/open')).text()).toBe('open 2');
  });

  it('replays a streamSSE response with the same events', async () => {
    let runs = 0;
    const app = new Hono();
    app.use(
      idempotency({
        store: createMemoryStore(),
        scope: (c) => ({ principal: c.req.header('x-user') ?? 'anonymous' }),
        onWarning: () => {},
      }),
    );
    app.post('/sse', (c) =>
      streamSSE(c, async (stream) => {
        runs++;
        for (const data of ['Hel', 'lo', ` #${runs}`])
          await stream.writeSSE({ data, event: 'token' });
      }),
    );
    const call = () =>
      app.request('/sse', { method: 'POST', headers: { 'idempotency-key': 'sse-1' } });
    const first = await (await call()).text();
    const replay = await call();
    expect(first).toBe(
      'event: token\ndata: Hel\n\nevent: token\ndata: lo\n\nevent: token\ndata:  #1\n\n',
    );
    expect(replay.headers.get('content-type')).toBe('text/event-stream');
    expect(await replay.text()).toBe(first);
    expect(runs).toBe(1);
  });
});
