import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createMemoryStore } from '@idem/store-memory';
import express from 'express';
import { afterAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

// rev10: idem mounted before the parsers (the setup the README calls clear of every
// parsed-body gap) fingerprints the bytes and the media type without its parameters. The
// parsers after it decode the same bytes by the charset parameter: one fingerprint, two
// bodies for the route.

const servers: Server[] = [];
afterAll(() =>
  Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve)))),
);

async function start() {
  const seen: unknown[] = [];
  const app = express();
  app.use(idempotency({ store: createMemoryStore(), scope: 'global', onWarning: () => {} }));
  app.use(express.text(), express.urlencoded());
  app.post('/notes', (req, res) => {
    seen.push(req.body);
    res.status(201).json({ got: req.body });
  });
  const server = app.listen(0, '127.0.0.1');
  servers.push(server);
  await new Promise((resolve) => server.once('listening', resolve));
  return { port: (server.address() as AddressInfo).port, seen };
}

async function post(port: number, key: string, contentType: string, bytes: Buffer) {
  const response = await fetch(`http://127.0.0.1:${port}/notes`, {
    method: 'POST',
    headers: { 'idempotency-key': key, 'content-type': contentType },
    body: new Uint8Array(bytes),
    signal: AbortSignal.timeout(5_000),
  });
  return {
    status: response.status,
    replayed: response.headers.get('idempotent-replayed') === 'true',
    got: ((await response.json()) as { got?: unknown }).got,
  };
}

describe('rev10 express: the charset parameter changes what the parser reads', () => {
  const utf8Bytes = Buffer.from('caf\u00e9', 'utf8'); // 63 61 66 C3 A9

  it('setup: express.text() reads the same bytes as two strings', async () => {
    const { port } = await start();
    expect((await post(port, 's1', 'text/plain; charset=utf-8', utf8Bytes)).got).toBe('café');
    expect((await post(port, 's2', 'text/plain; charset=iso-8859-1', utf8Bytes)).got).toBe('cafÃ©');
  });

  // FIXED (was FINDING LOW; the charset other than UTF-8 is in the fingerprint now): the fingerprint dropped the charset parameter, but express.text()/express.urlencoded() after idem decode by it: the same bytes sent as ISO-8859-1 ("cafÃ©") under the key of a UTF-8 request ("café") are replayed the UTF-8 outcome instead of 422
  it('text/plain: the same bytes under another charset are 422 or their own run, never the other replay', async () => {
    const { port, seen } = await start();
    expect((await post(port, 'cs-text', 'text/plain; charset=utf-8', utf8Bytes)).got).toBe('café');
    const second = await post(port, 'cs-text', 'text/plain; charset=iso-8859-1', utf8Bytes);
    // Was: 201, replayed, got "café" (the route would read "cafÃ©"). Now another request: 422.
    expect(second.replayed && second.got !== 'cafÃ©').toBe(false);
    expect(second.status).toBe(422);
    expect(seen).toEqual(['café']);
  });

  // FIXED (was FINDING LOW): likewise for a form: a=caf%C3%A9 as ISO-8859-1 ({a:"cafÃ©"}) is replayed the UTF-8 outcome ({a:"café"})
  it('a form: the same bytes under another charset are never replayed the other outcome', async () => {
    const { port } = await start();
    const form = Buffer.from('a=caf%C3%A9');
    const type = 'application/x-www-form-urlencoded';
    expect((await post(port, 'cs-form', `${type}; charset=utf-8`, form)).got).toEqual({
      a: 'café',
    });
    const second = await post(port, 'cs-form', `${type}; charset=iso-8859-1`, form);
    expect(second.replayed).toBe(false);
    expect(second.status).toBe(422);
  });

  it('held: charset spelled otherwise (case, none for UTF-8 text) is the same request', async () => {
    const { port, seen } = await start();
    expect((await post(port, 'cs-same', 'text/plain; charset=utf-8', utf8Bytes)).status).toBe(201);
    const again = await post(port, 'cs-same', 'Text/Plain; Charset=UTF-8', utf8Bytes);
    expect(again).toMatchObject({ status: 201, replayed: true, got: 'café' });
    expect(seen).toEqual(['café']);
  });
});
