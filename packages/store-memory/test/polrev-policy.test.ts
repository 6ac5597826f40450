import {
  createIdempotency,
  decideOutcome,
  deriveStorageKey,
  type IdempotencyOptions,
  InProgressError,
  InvalidInputError,
  ReplayedFailureError,
} from '@idem/core';
import { describe, expect, it } from 'vitest';
import { createMemoryStore } from '../src/index.js';

// Adversarial review (polrev) of the outcome policy (`isFinal`) after 9528cec8: core records a
// success whose policy throws and releases a failure whose policy throws. Attacked here with
// the memory store: policies that answer a Promise (an async isFinal), answer a non-boolean,
// throw a non-Error, throw on some calls only, or call execute on the key they judge.

/** Rejections nobody handled (an async policy's rejection ends a process). */
const unhandled: unknown[] = [];
process.on('unhandledRejection', (reason) => unhandled.push(reason));

function setup(isFinal: IdempotencyOptions<string>['isFinal']) {
  const store = createMemoryStore({ sweepIntervalMs: 0 });
  const idem = createIdempotency<string>({ store, leaseMs: 5_000, heartbeatMs: false, isFinal });
  let runs = 0;
  const succeed = async () => {
    runs++;
    return 'charged';
  };
  const fail = async (): Promise<string> => {
    runs++;
    throw new Error('card declined');
  };
  const status = async (key: string) => (await store.get(deriveStorageKey(null, key)))?.status;
  /** The retry replays the value; the operation ran once; no rejection left unhandled. */
  const replaysOnce = async () => {
    expect(await idem.execute({ key: 'k' }, succeed)).toEqual({ value: 'charged', replayed: true });
    expect(runs).toBe(1);
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(unhandled).toEqual([]);
  };
  return { store, idem, succeed, fail, status, replaysOnce, runs: () => runs };
}

describe('an outcome policy that answers a Promise', () => {
  // FINDING (MEDIUM, fixed): an async isFinal was taken for `true` (a Promise is truthy): every
  // failure was recorded as final and replayed for ever, and one that rejected went unhandled
  // (the default Node settings end the process). Now refused where it can be told, at once.
  it('an async isFinal is refused when the engine is made (InvalidInputError), before anything runs', () => {
    const store = createMemoryStore({ sweepIntervalMs: 0 });
    expect(() => createIdempotency({ store, isFinal: (async () => true) as never })).toThrow(
      InvalidInputError,
    );
    expect(() =>
      createIdempotency({
        store,
        isFinal: async function* () {
          yield true;
        } as never,
      }),
    ).toThrow(InvalidInputError);
  });

  it('a Promise answered of a failure: the key is released, the caller gets InvalidInputError, a retry runs again', async () => {
    const t = setup((settled) => Promise.resolve(settled.ok) as never);
    const first = await t.idem.execute({ key: 'k' }, t.fail).catch((error: unknown) => error);
    expect(first).toBeInstanceOf(InvalidInputError);
    expect(String((first as Error).message)).toMatch(/Promise/);
    expect(await t.status('k')).toBe('released');
    // Never a replayed failure: the retry runs.
    const second = await t.idem.execute({ key: 'k' }, t.fail).catch((error: unknown) => error);
    expect(second).not.toBeInstanceOf(ReplayedFailureError);
    expect(t.runs()).toBe(2);
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(unhandled).toEqual([]);
  });

  it('a rejected Promise answered of a success: recorded once, the caller gets InvalidInputError, a retry replays, nothing unhandled', async () => {
    const t = setup(() => Promise.reject(new Error('async policy bug')) as never);
    const first = await t.idem.execute({ key: 'k' }, t.succeed).catch((error: unknown) => error);
    expect(first).toBeInstanceOf(InvalidInputError);
    expect(await t.status('k')).toBe('completed');
    await t.replaysOnce();
  });

  it('a thenable whose then throws is refused alike, and nothing is left unhandled', async () => {
    const thenable = {
      // biome-ignore lint/suspicious/noThenProperty: a thenable is what is under test.
      then() {
        throw new Error('then exploded');
      },
    };
    const t = setup(() => thenable as never);
    await expect(t.idem.execute({ key: 'k' }, t.succeed)).rejects.toBeInstanceOf(InvalidInputError);
    await t.replaysOnce();
  });
});

describe('other policy answers and faults (held)', () => {
  it('a non-boolean answer is read by its truthiness, as the engine always read it', async () => {
    const answers: Array<[unknown, 'completed' | 'released']> = [
      [1, 'completed'],
      ['yes', 'completed'],
      [{}, 'completed'],
      [0, 'released'],
      ['', 'released'],
      [null, 'released'],
      [undefined, 'released'],
    ];
    for (const [answer, status] of answers) {
      const t = setup(() => answer as never);
      expect(await t.idem.execute({ key: 'k' }, t.succeed)).toEqual({
        value: 'charged',
        replayed: false,
      });
      expect(await t.status('k')).toBe(status);
    }
  });

  it('a policy that throws a non-Error (undefined, a string, null) of a success: recorded, the caller gets what it threw, a retry replays', async () => {
    for (const thrown of [undefined, 'policy says no', null]) {
      const t = setup(() => {
        throw thrown;
      });
      const first = await t.idem.execute({ key: 'k' }, t.succeed).then(
        () => 'resolved',
        (error: unknown) => ({ rejected: error }),
      );
      expect(first).toEqual({ rejected: thrown });
      await t.replaysOnce();
    }
  });

  it('a policy that throws on some calls only, over concurrent keys: every success ran once and is replayed', async () => {
    let calls = 0;
    const t = setup(() => {
      calls++;
      if (calls % 3 === 0) throw new Error(`policy bug on call ${calls}`);
      return true;
    });
    const keys = Array.from({ length: 30 }, (_, i) => `k${i}`);
    const first = await Promise.allSettled(keys.map((key) => t.idem.execute({ key }, t.succeed)));
    expect(first.filter((r) => r.status === 'rejected')).toHaveLength(10);
    const again = await Promise.all(keys.map((key) => t.idem.execute({ key }, t.succeed)));
    expect(again.every((r) => r.replayed)).toBe(true);
    expect(t.runs()).toBe(30);
  });

  it('a policy that calls execute on the key it judges: the inner call is IN_PROGRESS, the outer outcome is recorded once', async () => {
    let inner: Promise<unknown> | undefined;
    const t = setup((settled) => {
      inner ??= t.idem.execute({ key: 'k' }, t.succeed).then(
        (r) => r,
        (error: unknown) => error,
      );
      return settled.ok;
    });
    expect(await t.idem.execute({ key: 'k' }, t.succeed)).toEqual({
      value: 'charged',
      replayed: false,
    });
    const answer = await inner;
    // Either refused while the key was in progress, or a replay of the recorded value: never a second run.
    if (answer instanceof Error) expect(answer).toBeInstanceOf(InProgressError);
    else expect(answer).toEqual({ value: 'charged', replayed: true });
    expect(t.runs()).toBe(1);
  });
});

describe('decideOutcome (an engine over core decides for its own execution)', () => {
  it('two executions ending with the same value in the same tick each get their own decision; the policy is not asked', async () => {
    let asked = 0;
    const t = setup(() => {
      asked++;
      return true;
    });
    let open!: () => void;
    const gate = new Promise<void>((resolve) => {
      open = resolve;
    });
    const run = (key: string, final: boolean) =>
      t.idem.execute({ key }, async (ctx) => {
        await gate;
        decideOutcome(ctx, final);
        return 'ok';
      });
    const kept = run('kept', true);
    const dropped = run('dropped', false);
    open();
    expect(await Promise.all([kept, dropped])).toEqual([
      { value: 'ok', replayed: false },
      { value: 'ok', replayed: false },
    ]);
    expect(await t.status('kept')).toBe('completed');
    expect(await t.status('dropped')).toBe('released');
    expect(asked).toBe(0);
  });

  it('refuses anything but the context execute gave the operation', () => {
    expect(() => decideOutcome({ fence: 1 } as never, true)).toThrow(InvalidInputError);
    expect(() => decideOutcome(null as never, true)).toThrow(InvalidInputError);
  });
});
