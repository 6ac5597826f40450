import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { PassThrough } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { IdemEvent } from '@idem/core';
import { silentAfterLeaving } from '@idem/http-conformance';
import { afterEach, describe, expect, it } from 'vitest';
import { closeAll, listenLoopback, recordedHandler } from './support/h2c.js';

// rev30c FINDING (MEDIUM, bounded time; regression of leftearly30's `holdWhile`): a held
// handler that pipes a stream into its response and awaits the response's end (`await
// pipeline(stream, res)`, a Nest `@Res()` handler, a Fastify handler returning `reply` after
// `reply.send(stream)`) waits on a 'close' that recordServerResponse holds back until the
// stream ends or the lease is lost. The hold kept the lease: a stream silent after its client
// left kept the key until maxHoldMs (409 to every retry), where a silent body frees it within
// two leases. A pipe into the response makes the body the stream's work: its silence counts.

const LEASE = 300;

describe('rev30c recordServerResponse: a held handler awaiting the end of the stream it piped', () => {
  const streams: PassThrough[] = [];
  afterEach(async () => {
    for (const stream of streams.splice(0)) stream.destroy();
    await closeAll();
  });

  it('the stream goes silent after the client left: freed within two leases, by the silence watch', async () => {
    const events: IdemEvent[] = [];
    let runs = 0;
    const app = recordedHandler(
      async (_req: IncomingMessage, res: ServerResponse) => {
        runs += 1;
        const stream = new PassThrough();
        streams.push(stream);
        res.writeHead(200, { 'content-type': 'text/plain' });
        stream.write(`begun ${runs}.`);
        await pipeline(stream, res).catch(() => {});
      },
      { leaseMs: LEASE, maxHoldMs: 60_000, onEvent: (event) => events.push(event) },
      true,
    );
    const port = await listenLoopback(
      createServer((req, res) => {
        void app.handle(req, res);
      }),
    );
    const statuses = await silentAfterLeaving(
      `http://127.0.0.1:${port}`,
      '/x',
      'held-pipe',
      LEASE,
      () => runs,
    );
    const lost = events.flatMap((event) =>
      event.type === 'lease_lost' ? [[event.fence, event.phase]] : [],
    );
    expect({ last: statuses.at(-1), runs, lost }).toEqual({
      last: 200,
      runs: 2,
      lost: [[1, 'heartbeat']],
    });
  });
});
