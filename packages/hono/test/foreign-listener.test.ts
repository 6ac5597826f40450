// The helper warning (Hono's own streamText under the middleware) goes to `onWarning`; an
// async listener made in another realm (a `vm` context, a sandbox) answers a promise that is
// not this realm's `Promise`. The old `instanceof Promise` check let its rejection go
// unhandled (by default Node ends the process on the first one); now any thenable's rejection
// is ignored, and the answer is unchanged.
import vm from 'node:vm';
import { createMemoryStore } from '@idem/store-memory';
import { unhandledRejections } from '@idem/test-ledger/unhandled';
import { Hono } from 'hono';
import { streamText } from 'hono/streaming';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

describe('@idem/hono: an onWarning answering a foreign promise', () => {
  // Only this file's listener, so that the old source's rejections are counted here.
  const rejections = unhandledRejections();
  beforeEach(rejections.start);
  afterEach(rejections.stop);

  it('the helper warning to an async listener from a vm context: answered, replayed, nothing unhandled', async () => {
    const foreign = vm.runInContext(
      '(async (message) => { throw new Error("foreign warning bug: " + message.length) })',
      vm.createContext({}),
    ) as (message: string) => Promise<void>;
    const warnings: string[] = [];
    let runs = 0;
    const app = new Hono();
    app.use(
      idempotency({
        store: createMemoryStore(),
        scope: 'global',
        onWarning: (message) => {
          warnings.push(message);
          return foreign(message);
        },
      }),
    );
    app.post('/text', (c) =>
      streamText(c, async (stream) => {
        runs++;
        await stream.write(`run ${runs}`);
      }),
    );
    const call = () =>
      app.request('/text', { method: 'POST', headers: { 'idempotency-key': 'text-1' } });
    expect(await (await call()).text()).toBe('run 1');
    const replay = await call();
    expect(replay.headers.get('idempotent-replayed')).toBe('true');
    expect(await replay.text()).toBe('run 1');
    expect(runs).toBe(1);
    expect(warnings).toHaveLength(1);
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(rejections.seen).toEqual([]);
  });
});
