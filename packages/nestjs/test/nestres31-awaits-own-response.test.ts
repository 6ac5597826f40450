import 'reflect-metadata';
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import type { ServerResponse } from 'node:http';
import { PassThrough } from 'node:stream';
import { finished } from 'node:stream/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import { Controller, Module, Post, Res } from '@nestjs/common';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IdempotencyModule, Idempotent } from '../src/index.js';
import { type Platform, startNest } from './scenario-app.js';

// nestres31 FINDING (MEDIUM, bounded time; fixed in @idem/http's node response recorder): a
// `@Res()` handler that awaits its own response (`await finished(res)`, `await
// once(res, 'close')`) is held by the interceptor (the recorder's `holdWhile`) while its
// promise is pending. Once its client left, the response's 'close' is held back so that the
// body still written is recorded; the handler waited for that very event, which came only
// when the lease was lost: its key stayed held (409 to every retry) up to maxHoldMs, not
// freed within about two leases as any other silent body whose client left. Now, silent for a
// whole lease with the handler still held and listening to the response's 'close', the close
// goes to its listeners and the key is freed once the handler settled. A handler that still
// works (a slow call before it writes more) stays held and is recorded, listener or not, and
// so does one feeding a stream piped into the response: a piped stream's silence cannot be
// told from its producer's work, so `await pipeline(stream, res)` with a stream that stays
// silent is held as before (up to maxHoldMs; see the README).

const LEASE = 300;
// Far beyond what the retries below wait: the old source answered 409 until this passed.
const MAX_HOLD = 30_000;
const runs = new Map<string, number>();
const begin = (route: string) => {
  const run = (runs.get(route) ?? 0) + 1;
  runs.set(route, run);
  return run;
};
let gate: Promise<void> = Promise.resolve();
/** The run of each route that waits for `gate` (the first of a check). */
const gated = new Map<string, number>();
type Reply = ServerResponse | { raw: ServerResponse };
const rawOf = (reply: Reply) => ('raw' in reply ? reply.raw : reply);

@Controller()
@Idempotent()
class OwnResponseController {
  @Post('finished')
  async finishedRoute(@Res() reply: Reply) {
    begin('finished');
    const res = rawOf(reply);
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.write('begun.');
    // Waits for the response to be done (its end, or its 'close'): nothing else ends it.
    await finished(res);
  }

  @Post('closed')
  async closed(@Res() reply: Reply) {
    begin('closed');
    const res = rawOf(reply);
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.write('begun.');
    await once(res, 'close');
  }

  @Post('working')
  async working(@Res() reply: Reply) {
    await workThenEnd('working', rawOf(reply), 'write');
  }

  @Post('fed')
  async fed(@Res() reply: Reply) {
    await workThenEnd('fed', rawOf(reply), 'pipe');
  }

  @Post('working-listening')
  async workingListening(@Res() reply: Reply) {
    await workThenEnd('working-listening', rawOf(reply), 'listen');
  }
}

/**
 * A handler still working: its head and first chunk, then a slow call (`gate`, for the run a
 * check waits on), then the end. `write`: straight to the response; `pipe`: through a stream
 * piped into it, fed between calls; `listen`: straight, with a 'close' listener on it (the
 * end then says whether it heard of the client's leaving).
 */
async function workThenEnd(route: string, res: ServerResponse, how: 'write' | 'pipe' | 'listen') {
  const run = begin(route);
  let left = false;
  if (how === 'listen')
    res.on('close', () => {
      left = true;
    });
  res.writeHead(200, { 'content-type': 'text/plain' });
  const out = how === 'pipe' ? new PassThrough() : res;
  if (out !== res) out.pipe(res);
  out.write(`begun ${run}.`);
  if (run === gated.get(route)) await gate;
  out.end(left ? 'done after close' : 'done');
}

@Module({
  imports: [
    IdempotencyModule.forRoot({
      store: createMemoryStore(),
      scope: 'global',
      leaseMs: LEASE,
      maxHoldMs: MAX_HOLD,
      onWarning: () => {},
    }),
  ],
  controllers: [OwnResponseController],
})
class OwnResponseModule {}

/** A keyed POST that leaves once the first body bytes came. */
const leave = (url: string, path: string, key: string) =>
  send(url, path, { key, body: { a: 1 }, leaveAfterBytes: 3 }).catch(() => undefined);

describe.each<Platform>(['express', 'fastify'])(
  'nestres31 @idem/nestjs on platform-%s: a @Res() handler awaiting its own response, client gone',
  (platform) => {
    let url = '';
    let close = async () => {};
    beforeAll(async () => {
      ({ url, close } = await startNest(platform, OwnResponseModule));
    });
    afterAll(() => close());

    it.each([
      ['working', 'done'],
      ['fed', 'done'],
      // Its 'close' stays held back while the body is recorded: it ends as it would have.
      ['working-listening', 'done'],
    ])('/%s: a handler still working is held (409) and recorded once', async (route, end) => {
      const key = randomUUID();
      let release!: () => void;
      gate = new Promise((resolve) => {
        release = resolve;
      });
      const before = runs.get(route) ?? 0;
      gated.set(route, before + 1);
      await leave(url, `/${route}`, key);
      // Six leases of silence past the client's leaving: the handler is working, held.
      for (let i = 0; i < 12; i++) {
        await sleep(LEASE / 2);
        const retry = await send(url, `/${route}`, { key, body: { a: 1 } });
        expect(retry.status).toBe(409);
      }
      expect(runs.get(route)).toBe(before + 1);
      release();
      let last = await send(url, `/${route}`, { key, body: { a: 1 } });
      for (let i = 0; i < 20 && last.status === 409; i++) {
        await sleep(LEASE / 4);
        last = await send(url, `/${route}`, { key, body: { a: 1 } });
      }
      expect([last.status, last.headers['idempotent-replayed'], last.body.toString()]).toEqual([
        200,
        'true',
        `begun ${before + 1}.${end}`,
      ]);
      expect(runs.get(route)).toBe(before + 1);
    });
  },
);
