import { createServer, request as httpRequest, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createMemoryStore } from '@idem/store-memory';
import { afterEach, describe, expect, it } from 'vitest';
import { createIdempotencyHandler } from '../src/index.js';
import { recordServerResponse, sendDecisionResponse } from '../src/node.js';
import { described } from './support/recorded-server.js';

// rev11: the coalesced replay (node.ts writeChunks) of a recorded stream of several chunks,
// when the client has already gone before the replay starts (it left during the store's
// lookup). The replay's promise must settle: Koa awaits it, Express returns it.

const servers: Server[] = [];
afterEach(async () => {
  await Promise.all(
    servers.splice(0).map(
      (s) =>
        new Promise<void>((resolve) => {
          s.closeAllConnections();
          s.close(() => resolve());
        }),
    ),
  );
});

function post(port: number, key: string, abortAfterSend = false): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      {
        host: '127.0.0.1',
        port,
        method: 'POST',
        path: '/s',
        headers: { 'idempotency-key': `"${key}"`, 'content-type': 'application/json' },
      },
      (res) => {
        const parts: Buffer[] = [];
        res.on('data', (c: Buffer) => parts.push(c));
        res.on('end', () => resolve(Buffer.concat(parts).toString()));
        res.on('error', reject);
      },
    );
    req.on('error', () => resolve('aborted'));
    req.end('{}');
    if (abortAfterSend) setTimeout(() => req.destroy(), 50);
  });
}

async function start(gate: (req: IncomingMessage) => Promise<void>) {
  const idem = createIdempotencyHandler<IncomingMessage>({
    store: createMemoryStore(),
    scope: 'global',
    onWarning: () => {},
  });
  const settled: Array<'settled' | 'pending'> = [];
  const server = createServer(async (req, res) => {
    const decision = await idem.begin(described(req));
    if (decision.action === 'respond') {
      await gate(req);
      const state: { v: 'settled' | 'pending' } = { v: 'pending' };
      settled.push('pending');
      const index = settled.length - 1;
      void sendDecisionResponse(res, decision).then(() => {
        state.v = 'settled';
        settled[index] = 'settled';
      });
      return;
    }
    if (decision.action === 'execute') recordServerResponse(res, decision.recorder);
    res.writeHead(200, { 'content-type': 'text/plain' });
    // A streamed body of many chunks, large enough to fill the socket's buffers.
    const piece = Buffer.alloc(64 * 1024, 0x61);
    for (let i = 0; i < 40; i++) res.write(piece);
    res.end();
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { port: (server.address() as AddressInfo).port, settled };
}

describe('rev11 coalesced replay when the client is gone', () => {
  it('a replay to a connected client is byte-identical and settles', async () => {
    const { port, settled } = await start(async () => {});
    const first = await post(port, 'rev11-replay-ok');
    const again = await post(port, 'rev11-replay-ok');
    expect(again.length).toBe(first.length);
    expect(again).toBe(first);
    await new Promise((r) => setTimeout(r, 50));
    expect(settled).toEqual(['settled']);
  });

  it('a replay whose client leaves mid-body settles (close ends the wait for drain)', async () => {
    const { port, settled } = await start(async () => {});
    await post(port, 'rev11-replay-mid');
    await new Promise<void>((resolve) => {
      const req = httpRequest(
        {
          host: '127.0.0.1',
          port,
          method: 'POST',
          path: '/s',
          headers: { 'idempotency-key': '"rev11-replay-mid"', 'content-type': 'application/json' },
        },
        (res) => {
          // Read nothing more after the head: the server's writes back up, then the client goes.
          res.pause();
          setTimeout(() => {
            req.destroy();
            resolve();
          }, 200);
        },
      );
      req.on('error', () => {});
      req.end('{}');
    });
    const deadline = Date.now() + 2_000;
    while (Date.now() < deadline && settled[0] !== 'settled')
      await new Promise((r) => setTimeout(r, 50));
    expect(settled).toEqual(['settled']);
  });

  // FIXED (was FINDING MEDIUM): a multi-chunk replay to a client that left before the replay began never settles (waits for a 'drain'/'close' that already passed): each such request pins its decoded record
  it('a replay whose client left during the lookup settles (no promise waiting forever)', async () => {
    let left!: () => void;
    const gone = new Promise<void>((r) => {
      left = r;
    });
    const { port, settled } = await start(
      (req) =>
        new Promise<void>((resolve) => {
          // The store lookup is slow: the replay starts once the client has gone.
          if (req.socket.destroyed) return resolve();
          req.socket.once('close', () => setTimeout(resolve, 20));
          left();
        }),
    );
    const first = await post(port, 'rev11-replay-gone');
    expect(first.length).toBe(40 * 64 * 1024);
    await post(port, 'rev11-replay-gone', true);
    await gone;
    const deadline = Date.now() + 2_000;
    while (Date.now() < deadline && settled[0] !== 'settled')
      await new Promise((r) => setTimeout(r, 50));
    expect(settled).toHaveLength(1); // the replay began
    expect(settled).toEqual(['settled']);
  });
});
