import { setTimeout as sleep } from 'node:timers/promises';
import { Hono } from 'hono';
import { describe, expect, it } from 'vitest';
import { idempotency, timeout } from '../src/index.js';
import { keyOf, memoryOptions, settled, viaFetch } from './rev33b-support.js';

// rev34h: @idem/hono's timeout() with bad or edge arguments.
// FINDING (MEDIUM, fixed): a duration past setTimeout's 2^31 - 1 ms (`Infinity`, the usual "no
// limit") fired after 1 ms (Node's TimeoutOverflowWarning): every idempotent request answered
// 504 and, its handler having run on, the `answered_outside` marker for its key (the outcome
// lost for the whole retention). NaN and negative durations fired at once alike: now a
// RangeError when the middleware is made.
// FINDING (LOW, fixed): an exception function that throws threw from a timer callback: an
// uncaught exception (the process crashes). Now the default 504, its error as the cause.

function appWith(duration: number, exception?: Parameters<typeof timeout>[1]) {
  const counts = { runs: 0 };
  const app = new Hono();
  app.use(idempotency(memoryOptions()));
  app.use(timeout(duration, exception));
  app.post('/charges', async (c) => {
    counts.runs += 1;
    await sleep(40);
    return c.json({ run: counts.runs }, 201);
  });
  return { app, counts };
}

describe('rev34h hono: timeout() edge arguments', () => {
  it('NaN, negative: RangeError when made', () => {
    expect(() => timeout(Number.NaN)).toThrow(RangeError);
    expect(() => timeout(-1)).toThrow(RangeError);
  });

  for (const duration of [Number.POSITIVE_INFINITY, 2 ** 31]) {
    it(`${duration}: never times out, recorded and replayed`, async () => {
      const { app, counts } = appWith(duration);
      const post = viaFetch(app);
      const key = keyOf('no-limit');
      expect((await post(key)).status).toBe(201);
      const again = await post(key);
      expect([again.status, again.replayed, counts.runs]).toEqual([201, 'true', 1]);
    });
  }

  it('0: a 504 at once, then the marker (the handler ran on), one run', async () => {
    const { app, counts } = appWith(0);
    const post = viaFetch(app);
    const key = keyOf('zero');
    expect((await post(key)).status).toBe(504);
    const last = await settled(post, key);
    expect([last.status, counts.runs]).toEqual([500, 1]);
  });

  it('an exception function that throws: a 504, no crash, then the marker, one run', async () => {
    const { app, counts } = appWith(5, () => {
      throw new Error('broken exception factory');
    });
    const post = viaFetch(app);
    const key = keyOf('throwing-factory');
    expect((await post(key)).status).toBe(504);
    const last = await settled(post, key);
    expect([last.status, counts.runs]).toEqual([500, 1]);
  });
});
