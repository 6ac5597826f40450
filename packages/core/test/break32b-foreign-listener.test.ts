// break32b: an `onEvent` listener's rejections are ignored whatever promise it answers, not
// only this realm's `Promise`. Before the fix an async listener made in another realm (a
// `vm` context, a test environment, a plugin sandbox) or answering another thenable that
// rejects left one unhandled rejection per event: by default Node ends the process on the
// first one, so a logging bug brought the server down (the README: "rejections are ignored").
import vm from 'node:vm';
import { unhandledRejections } from '@idem/test-ledger/unhandled';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createIdempotency } from '../src/index.js';
import { FakeStore } from './support/fake-store.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('break32b: an onEvent listener answering a foreign promise', () => {
  // Only this file's listener, so that the old source's rejections are counted here.
  const rejections = unhandledRejections();
  beforeEach(rejections.start);
  afterEach(rejections.stop);

  it('an async listener from another realm that rejects: no unhandled rejection, the execute answers', async () => {
    const listener = vm.runInContext(
      '(async (event) => { throw new Error("listener broke on " + event.type) })',
      vm.createContext({}),
    );
    const idem = createIdempotency({ store: new FakeStore(), onEvent: listener });
    const result = await idem.execute({ key: 'k', scope: 's' }, async () => 1);
    expect(result).toEqual({ value: 1, replayed: false });
    await sleep(50);
    expect(rejections.seen).toEqual([]);
  });

  it('a listener answering a thenable that rejects, or whose then throws: ignored too', async () => {
    let subscribed = 0;
    const thenables = [
      Object.defineProperty({}, 'then', {
        value(_ok: unknown, fail: (error: unknown) => void) {
          subscribed++;
          fail(new Error('thenable rejects'));
        },
      }),
      Object.defineProperty({}, 'then', {
        get() {
          throw new Error('then getter throws');
        },
      }),
    ];
    let n = 0;
    const idem = createIdempotency({
      store: new FakeStore(),
      onEvent: () => thenables[n++ % 2] as never,
    });
    expect(await idem.execute({ key: 'k2', scope: 's' }, async () => 2)).toEqual({
      value: 2,
      replayed: false,
    });
    await sleep(50);
    expect(rejections.seen).toEqual([]);
    expect(subscribed).toBeGreaterThan(0);
  });
});
