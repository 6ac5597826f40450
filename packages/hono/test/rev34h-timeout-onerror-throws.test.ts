import { setTimeout as sleep } from 'node:timers/promises';
import { Hono } from 'hono';
import { afterAll, describe, expect, it } from 'vitest';
import { idempotency, timeout } from '../src/index.js';
import { keyOf, memoryOptions, viaFetch } from './rev33b-support.js';

// rev34h: timeout() after idempotency() under an `app.onError` that rethrows (hands errors to
// the runtime or an outer framework): the timeout's throw then rejects idem's `next()`, whose
// catch releases the key at once (`recorder.fail`), while the handler it overtook still runs.
// FINDING (LOW; fixed in @idem/http's `fail`, which now waits for the handlers given to
// `holdWhile`, then releases if one threw and marks otherwise): a retry meanwhile ran the
// handler beside the first.

let release!: () => void;
const slow = new Promise<void>((resolve) => {
  release = resolve;
});
afterAll(() => release());

describe('rev34h hono: timeout() after idem, app.onError rethrows', () => {
  it('app.fetch directly: a retry while the overtaken handler runs gets 409, never a second run beside it', async () => {
    const counts = { runs: 0, running: 0, overlap: 0 };
    const app = new Hono();
    app.onError((error) => {
      throw error;
    });
    app.use(idempotency(memoryOptions()));
    app.use(timeout(20));
    app.post('/charges', async (c) => {
      counts.runs += 1;
      counts.running += 1;
      if (counts.running > 1) counts.overlap += 1;
      try {
        if (counts.runs === 1) await slow;
        else await sleep(5);
        return c.json({ run: counts.runs }, 201);
      } finally {
        counts.running -= 1;
      }
    });
    const post = viaFetch(app);
    const key = keyOf('onerror-rethrows');
    await expect(post(key)).rejects.toThrow();
    const retry = await post(key).catch(() => undefined);
    release();
    expect([retry?.status, counts.overlap]).toEqual([409, 0]);
  });
});
