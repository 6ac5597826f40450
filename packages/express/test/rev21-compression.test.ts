import { once } from 'node:events';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { gunzipSync } from 'node:zlib';
import { send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import compression from 'compression';
import express from 'express';
import { afterAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

// rev21 (hono rev10-content-coding, on Express): compression() mounted after idem compresses
// the body before it is recorded; a retry whose Accept-Encoding refuses gzip is given the body
// decoded by the shared replay path of @idem/http (no Content-Encoding, its own Content-Length).

const servers: Server[] = [];
afterAll(() => Promise.all(servers.map((server) => new Promise((r) => server.close(r)))));

const TEXT = 'x'.repeat(5_000);
const CHUNKS = ['data: one\n\n', 'y'.repeat(3_000), 'data: two\n\n'];

async function start(order: 'idem-first' | 'compression-first') {
  let runs = 0;
  const app = express();
  const guard = idempotency({ store: createMemoryStore(), scope: 'global', onWarning: () => {} });
  // threshold 0: every body is compressed.
  const compress = compression({ threshold: 0 });
  if (order === 'idem-first') app.use(guard, compress);
  else app.use(compress, guard);
  app.post('/report', (_req, res) => {
    runs++;
    res.status(201).type('text/plain').send(TEXT);
  });
  app.post('/stream', async (_req, res) => {
    runs++;
    res.status(200).type('text/plain');
    for (const chunk of CHUNKS) {
      res.write(chunk);
      (res as unknown as { flush?: () => void }).flush?.();
      await new Promise((r) => setTimeout(r, 5));
    }
    res.end();
  });
  const server = app.listen(0, '127.0.0.1');
  servers.push(server);
  await once(server, 'listening');
  return { port: (server.address() as AddressInfo).port, runs: () => runs };
}

/** A POST with this Accept-Encoding (node:http sends none of its own, decodes nothing). */
async function post(port: number, path: string, key: string, acceptEncoding: string) {
  const { status, headers, body } = await send(`http://127.0.0.1:${port}`, path, {
    key,
    tenant: null,
    headers: { 'accept-encoding': acceptEncoding },
  });
  return {
    status,
    coding: headers['content-encoding'],
    length: headers['content-length'],
    vary: String(headers.vary),
    replayed: headers['idempotent-replayed'] === 'true',
    body,
  };
}

describe('rev21 express: compression() after idem and the retry Accept-Encoding', () => {
  it('a retry that refuses gzip gets the body decoded, with its Content-Length; one taking gzip gets the gzip', async () => {
    const { port, runs } = await start('idem-first');
    const first = await post(port, '/report', 'c1', 'gzip');
    expect([first.status, first.coding]).toEqual([201, 'gzip']);
    expect(gunzipSync(first.body).toString()).toBe(TEXT);
    const identity = await post(port, '/report', 'c1', 'identity');
    expect(identity).toMatchObject({
      status: 201,
      replayed: true,
      coding: undefined,
      length: String(TEXT.length),
    });
    expect(identity.vary.toLowerCase()).toContain('accept-encoding');
    expect(identity.body.toString()).toBe(TEXT);
    const gzip = await post(port, '/report', 'c1', 'br;q=0.5, gzip');
    expect(gzip).toMatchObject({ status: 201, replayed: true, coding: 'gzip' });
    expect(gzip.body.equals(first.body)).toBe(true);
    expect(runs()).toBe(1);
  });

  it('a streamed gzip body (flushed chunk by chunk) is decoded whole for identity', async () => {
    const { port, runs } = await start('idem-first');
    const first = await post(port, '/stream', 's1', 'gzip');
    expect(first.coding).toBe('gzip');
    expect(gunzipSync(first.body).toString()).toBe(CHUNKS.join(''));
    const identity = await post(port, '/stream', 's1', '*;q=0, identity');
    expect(identity).toMatchObject({ status: 200, replayed: true, coding: undefined });
    expect(identity.body.toString()).toBe(CHUNKS.join(''));
    expect(runs()).toBe(1);
  });

  it('held: compression() before idem compresses each replay for its own client', async () => {
    const { port, runs } = await start('compression-first');
    expect((await post(port, '/report', 'c2', 'gzip')).coding).toBe('gzip');
    const identity = await post(port, '/report', 'c2', 'identity');
    expect(identity).toMatchObject({ status: 201, replayed: true, coding: undefined });
    expect(identity.body.toString()).toBe(TEXT);
    expect(runs()).toBe(1);
  });
});
