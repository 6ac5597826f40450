/**
 * Mutation audit (store-postgres): the retry of a store step after a serialization failure
 * or a deadlock (README, Guarantees: "sends it again ... at most 8 times and within
 * statementTimeoutMs"). The session-isolation tests make serialization failures (40001) but no
 * deadlock, race too few times to reach the bound, and never time a retry: a step that gave up
 * on a deadlock, retried without bound, or gave each retry the whole limit passed. Here a
 * stand-in client answers what each case needs (the classification is what is tested).
 */
import { describe, expect, it } from 'vitest';
import { type Queryable, runStep } from '../src/pg-call.js';

const failure = (code: string) => Object.assign(new Error(`failed (${code})`), { code });

/** A client that fails with `codes` in turn (then answers one row), counting the calls. */
function client(codes: string[], then: 'answer' | 'hang' = 'answer') {
  let calls = 0;
  const target: Queryable = {
    query: (() => {
      const code = codes[calls++];
      if (code !== undefined) return Promise.reject(failure(code));
      return then === 'answer' ? Promise.resolve({ rows: [{ ok: true }] }) : new Promise(() => {});
    }) as Queryable['query'],
  };
  return { target, calls: () => calls };
}

describe('mutpg: a store step retried after 40001 / 40P01', () => {
  it('a deadlock (40P01) is sent again, as a serialization failure is', async () => {
    const { target, calls } = client(['40P01', '40001']);
    const result = await runStep(target, 'acquire', { text: 'SELECT 1' }, 10_000);
    expect(result.rows).toEqual([{ ok: true }]);
    expect(calls()).toBe(3);
  });

  it('at most 8 tries', async () => {
    const { target, calls } = client(Array(20).fill('40001'));
    await expect(runStep(target, 'acquire', { text: 'SELECT 1' }, 60_000)).rejects.toMatchObject({
      code: 'STORE_UNAVAILABLE',
    });
    expect(calls()).toBe(8);
  });

  it('a retry gets only the time left of the limit, not a whole one', async () => {
    let calls = 0;
    const target: Queryable = {
      query: (() =>
        calls++ === 0
          ? new Promise((_, reject) => setTimeout(() => reject(failure('40001')), 300))
          : new Promise(() => {})) as Queryable['query'],
    };
    const error = (await runStep(target, 'acquire', { text: 'SELECT 1' }, 600).catch(
      (e: unknown) => e,
    )) as Error;
    expect(calls).toBe(2);
    const limit = Number(/timed out after (\d+) ms/.exec(error.message)?.[1]);
    expect(limit).toBeGreaterThan(0);
    expect(limit).toBeLessThanOrEqual(300);
  });
});
