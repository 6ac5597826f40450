import { InProgressError, StoreUnavailableError } from '@idem/core';
import type pg from 'pg';
import { expect } from 'vitest';
import { sleep } from './pg-env.js';

/** What the transactional engine's `execute` needs of the tests' engines here. */
interface Engine {
  execute(
    request: { key: string; scope: string },
    operation: (ctx: { tx: pg.PoolClient; fence: number }) => Promise<string>,
  ): Promise<{ value: string }>;
}

/**
 * Calls `engine.execute` with `operation` until it runs (the key taken over), every `pauseMs`
 * after a 409 (any other error fails the test), for at most `limitMs`; the value, or
 * undefined when it never ran. Returns the number of 409s too.
 */
export async function untilTakenOver(
  engine: Engine,
  request: { key: string; scope: string },
  operation: (ctx: { tx: pg.PoolClient; fence: number }) => Promise<string>,
  { limitMs, pauseMs }: { limitMs: number; pauseMs: number },
): Promise<{ value: string | undefined; conflicts: number }> {
  const started = performance.now();
  let conflicts = 0;
  while (performance.now() - started < limitMs) {
    try {
      return { value: (await engine.execute(request, operation)).value, conflicts };
    } catch (error) {
      expect(error).toBeInstanceOf(InProgressError);
      conflicts++;
      await sleep(pauseMs);
    }
  }
  return { value: undefined, conflicts };
}

/** Inserts one business row of `scope` with `fence` in `table` through `tx`. */
export async function insertCharge(
  tx: pg.PoolClient,
  table: string,
  scope: string,
  fence: number,
): Promise<string> {
  const { rows } = await tx.query(
    `INSERT INTO ${table} (scope, fence) VALUES ($1, $2) RETURNING id`,
    [scope, fence],
  );
  return String(rows[0].id);
}

/**
 * Starts an execution under `scope` whose operation runs `inside` (with the transaction, the
 * fence and the signal) and then never comes back; resolves with its key once `inside` ran,
 * i.e. once the transaction holds the record. An owner whose transaction could not start
 * (short statement limits on a loaded machine: `StoreUnavailableError`) never holds the row:
 * it starts again under a fresh key (`k1`, `k2`, `k3`), and the third failure is thrown
 * instead of waiting for the test's timeout.
 */
export async function holdForever(
  engine: {
    execute(
      request: { key: string; scope: string },
      operation: (ctx: {
        tx: pg.PoolClient;
        fence: number;
        signal: AbortSignal;
      }) => Promise<string>,
    ): Promise<unknown>;
  },
  scope: string,
  inside: (ctx: { tx: pg.PoolClient; fence: number; signal: AbortSignal }) => Promise<void>,
): Promise<string> {
  for (let attempt = 1; ; attempt++) {
    const key = `k${attempt}`;
    let held!: () => void;
    const holding = new Promise<void>((resolve) => {
      held = resolve;
    });
    const first = engine.execute({ key, scope }, async (ctx) => {
      await inside(ctx);
      held();
      await new Promise(() => {}); // the owner never comes back
      return 'returned';
    });
    first.catch(() => {});
    try {
      await Promise.race([
        holding,
        first.then(
          () => Promise.reject(new Error('the owner returned')),
          (error: unknown) => Promise.reject(error),
        ),
      ]);
      return key;
    } catch (error) {
      if (!(error instanceof StoreUnavailableError) || attempt === 3) throw error;
    }
  }
}
