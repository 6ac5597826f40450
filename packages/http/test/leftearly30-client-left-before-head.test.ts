import {
  createServer as createH1Server,
  type IncomingMessage,
  type ServerResponse,
} from 'node:http';
import { createServer as createH2Server } from 'node:http2';
import { connect } from 'node:net';
import type { IdemEvent } from '@idem/core';
import { describeLeftBeforeHead, send } from '@idem/http-conformance';
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
  return { url: `http://127.0.0.1:${port}`, port };
}

describeLeftBeforeHead(
  'leftearly30 recordServerResponse: the client leaves before the head while the handler works',
  LEASE,
  async (probe, store, h2) => {
    const { url } = await serve(
      async (_req, res) => {
        const run = await probe.work();
        res.writeHead(201, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ run }));
      },
      { store },
      h2,
    );
    return { url, close: closeAll };
  },
  { http2: true },
);

/**
 * A route whose first run writes its head and `partial 1` when `head`, then never goes on
 * (nor answers); its client leaves (once the head came, when `head`). Retries until one is
 * not 409 (ten leases at most): answers it, the runs, and each lost lease's fence and phase.
 */
async function firstRunStuck(key: string, head: boolean, options: RecordingOptions) {
  const events: IdemEvent[] = [];
  let runs = 0;
  const { url, port } = await serve(
    async (_req, res) => {
      runs += 1;
      if (head) res.writeHead(200, { 'content-type': 'text/plain' }).write(`partial ${runs}`);
      if (runs === 1) await new Promise(() => {});
      if (head) res.end();
      else res.writeHead(201, { 'content-type': 'text/plain' }).end(`run ${runs}`);
    },
    { ...options, onEvent: (event) => events.push(event) },
  );
  const socket = connect(port, '127.0.0.1');
  socket.on('error', () => {});
  const came = new Promise((resolve) => socket.once('data', resolve));
  socket.write(
    `POST /x HTTP/1.1\r\nHost: a\r\nIdempotency-Key: ${key}\r\n` +
      'Content-Type: application/json\r\nContent-Length: 7\r\n\r\n{"a":1}',
  );
  if (head) await came;
  else for (let i = 0; i < 500 && runs === 0; i += 1) await sleep(10);
  socket.destroy();
  let last = await send(url, '/x', { key, body: { a: 1 } });
  for (let i = 0; i < 60 && last.status === 409; i += 1) {
    await sleep(50);
    last = await send(url, '/x', { key, body: { a: 1 } });
  }
  const lost = events.flatMap((event) =>
    event.type === 'lease_lost' ? [[event.fence, event.phase]] : [],
  );
  return { status: last.status, body: last.body.toString(), runs, lost };
}

describe('leftearly30 recordServerResponse: the bounds that stay', () => {
  afterEach(closeAll);

  it('a handler that never answers still frees its key at maxHoldMs: then a retry runs it again', async () => {
    // The first run's head never starts: its lease is renewed until maxHoldMs (five leases).
    const last = await firstRunStuck('never-answers', false, { maxHoldMs: 5 * LEASE });
    // Lost to maxHoldMs, not to a silence: it was renewed till then.
    expect(last).toEqual({ status: 201, body: 'run 2', runs: 2, lost: [[1, 'max_hold']] });
  });

  it('a body silent after its head, its client gone, still frees the key within two leases (not maxHoldMs)', async () => {
    const last = await firstRunStuck('silent-body', true, {});
    // Lost to the silence watch (its heartbeats stopped), with maxHoldMs at its 1 h default.
    expect(last).toEqual({ status: 200, body: 'partial 2', runs: 2, lost: [[1, 'heartbeat']] });
  });
});
