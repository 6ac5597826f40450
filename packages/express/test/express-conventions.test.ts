import { json, listening, send, spyStore } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import express from 'express';
import { afterEach, describe, expect, it } from 'vitest';
import { getIdempotency, idempotency } from '../src/index.js';

/** The caller's tenant (these tests send none: one tenant). */
const byTenant = (req: express.Request) => ({ principal: req.get('x-tenant') ?? 'tenant-a' });

const servers: { close(): Promise<void> }[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((server) => server.close()));
});

async function listen(app: express.Express): Promise<string> {
  const server = await listening(app.listen(0, '127.0.0.1'));
  servers.push(server);
  return server.url;
}

describe('@idem/express conventions', () => {
  it('works after express.json() and exposes the execution at res.locals', async () => {
    let runs = 0;
    const app = express();
    app.use(express.json());
    app.use(idempotency({ store: createMemoryStore(), scope: byTenant, onWarning: () => {} }));
    app.post('/orders', (req, res) => {
      runs++;
      const ctx = getIdempotency(res);
      res.status(201).json({ fence: ctx?.fence, key: ctx?.key, items: req.body.items });
    });
    const url = await listen(app);
    const first = await send(url, '/orders', { key: '"o-1"', body: { items: [1, 2] } });
    expect(json(first)).toEqual({ fence: 1, key: 'o-1', items: [1, 2] });
    const again = await send(url, '/orders', { key: 'o-1', body: { items: [1, 2] } });
    expect(again.body.equals(first.body)).toBe(true);
    expect((await send(url, '/orders', { key: 'o-1', body: { items: [3] } })).status).toBe(422);
    expect(runs).toBe(1);
  });

  it('records headers given to writeHead and a body written in parts with a Content-Length', async () => {
    const app = express();
    app.use(idempotency({ store: createMemoryStore(), scope: byTenant, onWarning: () => {} }));
    app.post('/raw', (_req, res) => {
      res.writeHead(202, { 'content-type': 'text/plain', 'content-length': '11', etag: '"v1"' });
      res.write('hello');
      res.write(' ');
      res.end('world');
    });
    const url = await listen(app);
    const first = await send(url, '/raw', { key: 'r-1' });
    const again = await send(url, '/raw', { key: 'r-1' });
    expect([first.status, again.status]).toEqual([202, 202]);
    expect(first.body.toString()).toBe('hello world');
    expect(again.body.equals(first.body)).toBe(true);
    expect(again.headers.etag).toBe('"v1"');
    expect(again.headers['idempotent-replayed']).toBe('true');
  });

  it('stops renewing once a response the client left stays silent for a lease: a retry then takes over', async () => {
    const spied = spyStore(createMemoryStore());
    const open: express.Response[] = [];
    const app = express();
    app.use(
      idempotency({
        store: spied.store,
        scope: byTenant,
        leaseMs: 300,
        heartbeatMs: 100,
        onWarning: () => {},
      }),
    );
    app.post('/stuck', (_req, res) => {
      open.push(res);
      res.status(200).type('text/event-stream');
      res.write('data: first\n\n');
    });
    const url = await listen(app);
    await expect(send(url, '/stuck', { key: 's-1', timeoutMs: 100 })).rejects.toThrow(/timed out/);
    // Silent for a whole lease after the client left: heartbeats stop (one in flight may land).
    await new Promise((resolve) => setTimeout(resolve, 400));
    const renewals = spied.calls.extend;
    await new Promise((resolve) => setTimeout(resolve, 400));
    expect(spied.calls.extend).toBe(renewals);
    expect(spied.calls.release).toBe(0);
    // The lease lapsed by itself: the retry takes the key over and runs the handler again.
    await expect(send(url, '/stuck', { key: 's-1', timeoutMs: 100 })).rejects.toThrow(/timed out/);
    expect(open).toHaveLength(2);
    for (const res of open) res.end();
  });
});
