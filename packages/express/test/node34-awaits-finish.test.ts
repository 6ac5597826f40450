import { once } from 'node:events';
import type { Server } from 'node:http';
import { connect } from 'node:net';
import { send, silentAfterLeaving } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import express from 'express';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { keyedGates, statusOnceFree } from '../../http-conformance/test/node34-kit.js';
import { heldWhileRunning, idempotency } from '../src/index.js';

// node34 (bounded time / liveness): a held route whose client left after the head, which then
// ends its response with a status that is not final and awaits that response's 'finish'. Node
// emits no 'finish' for a response closed before its end, so the route's promise never settled
// and the recorder, waiting for it to judge the end, held the key until maxHoldMs (409 to every
// retry). Now, a whole lease after such an end, the key gets the answered_outside marker (500
// to retries): never released while the route may still run, never a second run.

const LEASE = 300;
let runs = 0;
let ended = 0;
const gates = keyedGates();
let server: Server;
let url = '';

beforeAll(async () => {
  const app = express();
  app.use(
    idempotency({ store: createMemoryStore(), scope: 'global', leaseMs: LEASE, maxHoldMs: 60_000 }),
  );
  app.post(
    '/ends-500',
    heldWhileRunning(async (req, res) => {
      runs += 1;
      res.writeHead(500, { 'content-type': 'text/plain' });
      res.write('failing.');
      await gates.wait(req.headers['idempotency-key']);
      res.end('failed');
      ended += 1;
      await once(res, 'finish');
    }),
  );
  app.post(
    '/never-ends',
    heldWhileRunning(async (_req, res) => {
      runs += 1;
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.write(`begun ${runs}.`);
      await once(res, 'finish');
    }),
  );
  server = app.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const address = server.address();
  url = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`;
});
afterAll(() => {
  server.closeAllConnections();
  return new Promise((resolve) => server.close(resolve));
});

/** A keyed POST that leaves once its head came; answers the head's status. */
async function headAndLeave(path: string, key: string): Promise<number> {
  const socket = connect(Number(new URL(url).port), '127.0.0.1');
  socket.on('error', () => {});
  const head = new Promise<string>((resolve) =>
    socket.once('data', (data: Buffer) => resolve(data.toString('latin1'))),
  );
  socket.write(
    `POST ${path} HTTP/1.1\r\nHost: a\r\nIdempotency-Key: ${key}\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}`,
  );
  const status = Number((await head).slice(9, 12));
  const closed = once(socket, 'close');
  socket.destroy();
  await closed;
  return status;
}

describe('node34 express: a held route that awaits its response finish after its client left', () => {
  it('ended with a 500 after its client left: the marker within a few leases, one run', async () => {
    const before = runs;
    const key = `node34-ends-500-${process.pid}`;
    const post = () => send(url, '/ends-500', { key, body: {} });
    expect(await headAndLeave('/ends-500', key)).toBe(500);
    // The server has seen the client leave once it answers a later request on the key.
    expect((await post()).status).toBe(409);
    gates.open(key);
    const last = await statusOnceFree(post, { tries: 24, pauseMs: LEASE / 2 });
    expect(ended).toBeGreaterThan(0);
    expect(last).toBe(500);
    expect(runs - before).toBe(1);
  });

  // FINDING (node34, MEDIUM, liveness): a held route that never ends its response and awaits
  // its 'finish' after its client left holds the key until maxHoldMs. The recorder cannot tell
  // it from a route that still works after its client left (leftearly30: it must stay held, a
  // retry would run beside it), so it keeps renewing the lease while the route's promise runs.
  it.fails('never ending it: frees the key within a few leases, not at maxHoldMs', async () => {
    const before = runs;
    const statuses = await silentAfterLeaving(
      url,
      '/never-ends',
      `node34-never-ends-${process.pid}`,
      LEASE,
      () => runs - before,
    );
    expect(statuses.at(-1)).toBe(200);
    expect(runs - before).toBe(2);
  });
});
