// break32b: an `onEvent` listener's rejections are ignored whatever promise it answers, not
// only this realm's `Promise`. Before the fix an async listener made in another realm (a
// `vm` context, a test environment, a plugin sandbox) or answering another thenable that
// rejects left one unhandled rejection per event: by default Node ends the process on the
// first one, so a logging bug brought the server down (the README: "rejections are ignored").
import vm from 'node:vm';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createIdempotency } from '../src/index.js';
import { FakeStore } from './support/fake-store.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('break32b: an onEvent listener answering a foreign promise', () => {
  const unhandled: unknown[] = [];
  const onUnhandled = (reason: unknown) => unhandled.push(reason);
  let others: NodeJS.UnhandledRejectionListener[] = [];
  beforeEach(() => {
    unhandled.length = 0;
    // Only this test's listener, so that the old source's rejections are counted here rather
    // than reported by the runner for the whole file.
    others = process.listeners('unhandledRejection');
    process.removeAllListeners('unhandledRejection');
    process.on('unhandledRejection', onUnhandled);
  });
  afterEach(() => {
    process.off('unhandledRejection', onUnhandled);
    for (const listener of others) process.on('unhandledRejection', listener);
  });

  it('an async listener from another realm that rejects: no unhandled rejection, the execute answers', async () => {
    const listener = vm.runInContext(
      '(async (event) => { throw new Error("listener broke on " + event.type) })',
      vm.createContext({}),
    );
    const idem = createIdempotency({ store: new FakeStore(), onEvent: listener });
    const result = await idem.execute({ key: 'k', scope: 's' }, async () => 1);
    expect(result).toEqual({ value: 1, replayed: false });
    await sleep(50);
    expect(unhandled).toEqual([]);
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
    expect(unhandled).toEqual([]);
    expect(subscribed).toBeGreaterThan(0);
  });
});
