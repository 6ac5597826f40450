import {
  createServer as createH1Server,
  type IncomingMessage,
  type ServerResponse,
} from 'node:http';
import { createServer as createH2Server } from 'node:http2';
import { connect } from 'node:net';
import type { IdemEvent } from '@idem/core';
import { leftBeforeHeadProbe, send } from '@idem/http-conformance';
import { afterEach, describe, expect, it } from 'vitest';
import { closeAll, listenLoopback, type RecordingOptions, recordedHandler } from './support/h2c.js';

// leftearly30 FINDING (HIGH, exactly-once; fixed): a client that left before the head (its own
// timeout while the handler still worked: a slow payment or LLM call longer than the lease) had
// its response watched for silence as a body that had stopped: after a lease without output
// the heartbeats stopped, the lease lapsed, and a retry ran the handler a second time beside
// the first (409, 409, 409, 201), on every Node adapter but Koa. A response whose head has not
// started is a handler still working: its lease is renewed as for a client that stays, up to
// `maxHoldMs` (which still frees the key of a handler that never answers), and the silence
// watch starts with the head (a body silent after its head still frees the key within two
// leases).

const LEASE = 300;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
afterEach(closeAll);

type Route = (req: IncomingMessage, res: ServerResponse) => unknown;

async function serve(route: Route, options: RecordingOptions = {}, h2 = false) {
  const app = recordedHandler(route, { leaseMs: LEASE, ...options });
  const server = h2
    ? createH2Server((req, res) => {
        void app.handle(req as unknown as IncomingMessage, res as unknown as ServerResponse);
      })
    : createH1Server((req, res) => {
        void app.handle(req, res);
      });
  const port = await listenLoopback(server);
  return { url: `http://127.0.0.1:${port}`, runs: app.runs, port };
}

/** A keyed POST on a connection of its own, closed once `leave()` says so. */
async function leaveWhen(port: number, key: string, leave: () => boolean) {
  const socket = connect(port, '127.0.0.1');
  socket.on('error', () => {});
  const head = new Promise<void>((resolve) => socket.once('data', () => resolve()));
  socket.write(
    `POST /x HTTP/1.1\r\nHost: a\r\nIdempotency-Key: ${key}\r\n` +
      'Content-Type: application/json\r\nContent-Length: 7\r\n\r\n{"a":1}',
  );
  for (let i = 0; i < 500 && !leave(); i += 1) await sleep(10);
  return { head, leave: () => socket.destroy() };
}

/** The fence and phase of each `lease_lost` event. */
function leasesLost(events: IdemEvent[]) {
  return events.flatMap((event) =>
    event.type === 'lease_lost' ? [[event.fence, event.phase]] : [],
  );
}

/** Retries `key` until the answer is not 409 (bounded); answers it. */
async function retryPast409(url: string, key: string, rounds: number) {
  let last = await send(url, '/x', { key, body: { a: 1 } });
  for (let i = 0; i < rounds && last.status === 409; i += 1) {
    await sleep(50);
    last = await send(url, '/x', { key, body: { a: 1 } });
  }
  return last;
}

describe('leftearly30 recordServerResponse: the client leaves before the head while the handler works', () => {
  for (const h2 of [false, true]) {
    it(`${h2 ? 'HTTP/2 (a stream reset)' : 'HTTP/1.1'}: retries past two leases get 409, then the replay; the handler ran once`, async () => {
      const probe = leftBeforeHeadProbe(LEASE);
      const { url } = await serve(
        async (_req, res) => {
          const run = await probe.work();
          res.writeHead(201, { 'content-type': 'application/json' });
          res.end(JSON.stringify({ run }));
        },
        {},
        h2,
      );
      await probe.check(url, '/x', { http2: h2 });
    });
  }

  it('a handler that never answers still frees its key at maxHoldMs: then a retry runs it again', async () => {
    const events: IdemEvent[] = [];
    let runs = 0;
    const { url, port } = await serve(
      async (_req, res) => {
        runs += 1;
        // The first run never answers; the one that takes the key over answers at once.
        if (runs === 1) await new Promise(() => {});
        res.writeHead(201, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ run: runs }));
      },
      { maxHoldMs: 5 * LEASE, onEvent: (event) => events.push(event) },
    );
    const first = await leaveWhen(port, 'never-answers', () => runs > 0);
    first.leave();
    // Ten leases at most: maxHoldMs is five.
    const last = await retryPast409(url, 'never-answers', 60);
    expect(last.status).toBe(201);
    expect(last.body.toString()).toBe('{"run":2}');
    expect(runs).toBe(2);
    // The first execution lost its key to maxHoldMs, not to a silence: it was renewed till then.
    expect(leasesLost(events)).toEqual([[1, 'max_hold']]);
  });

  it('a body silent after its head, its client gone, still frees the key within two leases (not maxHoldMs)', async () => {
    const events: IdemEvent[] = [];
    let runs = 0;
    const { url, port } = await serve(
      async (_req, res) => {
        runs += 1;
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.write(`partial ${runs}`);
        // The first run's body never goes on; the retry's ends at once.
        if (runs === 1) await new Promise(() => {});
        res.end();
      },
      { onEvent: (event) => events.push(event) },
    );
    const first = await leaveWhen(port, 'silent-body', () => runs > 0);
    await first.head;
    first.leave();
    const last = await retryPast409(url, 'silent-body', 60);
    expect(last.status).toBe(200);
    expect(last.body.toString()).toBe('partial 2');
    expect(runs).toBe(2);
    // Lost to the silence watch (its heartbeats stopped), with maxHoldMs at its 1 h default.
    expect(leasesLost(events)).toEqual([[1, 'heartbeat']]);
  });
});
