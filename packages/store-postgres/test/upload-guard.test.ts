import { InProgressError } from '@idem/core';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createPostgresIdempotency, createPostgresStore } from '../src/index.js';
import { GUARDED_BYTES } from '../src/upload-guard.js';
import { makePool, pollUntil, randomName, sleep, uploadGuardsRunning } from './pg-env.js';
import { createCharges, insertCharge } from './take-over.js';
import { startThrottledProxy } from './throttled-proxy.js';

/**
 * The upload guard (src/upload-guard.ts): a statement's large first message is sent behind a
 * Flush (the server reads it with its idle timer off) once a guard runs on another connection
 * that ends the transaction when the owner's leases pass. pgrev19's slow-upload tests check
 * the healthy owner; these check that an owner cut off mid-upload still loses its transaction
 * (what the idle limit guaranteed), that nothing is left behind, and the limits.
 */
const schema = inject('pgSchema');
const table = inject('pgTable');
const charges = `"${schema}".upload_guard_charges`;
const raw = makePool({ max: 3 });

beforeAll(() => createCharges(raw, charges));
afterAll(() => raw.end());

/** A pool behind a ~400 KB/s uplink, `max` connections, `warm` of them open and idle. */
async function throttledPool(max: number, warm: number) {
  const proxy = await startThrottledProxy(20_000);
  const pool = new pg.Pool({ connectionString: proxy.url, max });
  pool.on('error', () => {});
  const open = await Promise.all(Array.from({ length: warm }, () => pool.connect()));
  for (const c of open) c.release();
  return { proxy, pool };
}

const engineOptions = { leaseMs: 2_000, heartbeatMs: 400, maxHoldMs: 60_000 };

/** An engine on `pool` with limits a loaded machine's renewals meet. */
function engineOn(pool: pg.Pool, keyPrefix: string, statementTimeoutMs = 1_500) {
  return createPostgresIdempotency<string>({
    store: createPostgresStore({ pool, table, keyPrefix, statementTimeoutMs }),
    ...engineOptions,
  });
}

const fenceRows = async (scope: string) =>
  (await raw.query(`SELECT fence FROM ${charges} WHERE scope = $1 ORDER BY id`, [scope])).rows.map(
    (r) => Number(r.fence),
  );

/** Backends running a guard's loop now. */
const guardsRunning = () => uploadGuardsRunning(raw);

describe('upload guard', () => {
  it('the owner’s uplink stops mid-upload of a 1.2 MB literal: the guard ends its transaction once its leases passed, the duplicate takes over after its signal aborted, nothing of the owner commits', async () => {
    const { proxy, pool } = await throttledPool(4, 3);
    const dupPool = makePool({ max: 2 });
    const keyPrefix = randomName('upguard');
    const scope = randomName('scope');
    const owner = engineOn(pool, keyPrefix);
    const duplicates = engineOn(dupPool, keyPrefix, 2_000);
    let abortedAt: number | undefined;
    let uploadError: { code?: string; message?: string } | undefined;
    let uploading!: () => void;
    const started = new Promise<void>((resolve) => {
      uploading = resolve;
    });
    try {
      const first = owner.execute({ key: 'k', scope }, async ({ tx, fence, signal }) => {
        signal.addEventListener('abort', () => {
          abortedAt ??= performance.now();
        });
        await insertCharge(tx, charges, scope, fence);
        const sent = tx.query(`SELECT length('${'x'.repeat(1_200_000)}') AS n`);
        uploading();
        await sent.catch((error: { code?: string; message?: string }) => {
          uploadError = error;
        });
        return 'owner';
      });
      first.catch(() => {});
      await started;
      // About a third of the message on its way, then nothing more from the owner: neither
      // the rest of it nor its renewals.
      await sleep(1_000);
      proxy.freezeUplinks();
      const frozenAt = performance.now();
      let tookOverAt: number | undefined;
      let abortedBeforeTakeover: boolean | undefined;
      let conflicts = 0;
      while (tookOverAt === undefined && performance.now() - frozenAt < 12_000) {
        try {
          await duplicates.execute({ key: 'k', scope }, async ({ tx, fence }) => {
            tookOverAt = performance.now();
            abortedBeforeTakeover = abortedAt !== undefined;
            await insertCharge(tx, charges, scope, fence);
            return 'duplicate';
          });
        } catch (error) {
          expect(error).toBeInstanceOf(InProgressError);
          conflicts++;
          await sleep(50);
        }
      }
      // The server's FATAL reaches the owner (its downlink works): ended by the guard
      // (57P01, an administrator command), not by the idle limit (25P03), which does not run
      // while the message is read behind a Flush.
      const ended = await pollUntil(
        async () => uploadError,
        (e) => e !== undefined,
        5_000,
      );
      console.info('upload guard, uplink frozen', {
        conflicts,
        tookOverAfterFreezeMs: tookOverAt && Math.round(tookOverAt - frozenAt),
        abortedAfterFreezeMs: abortedAt && Math.round(abortedAt - frozenAt),
        uploadError: ended && { code: ended.code, message: ended.message },
      });
      expect(ended?.code).toBe('57P01');
      expect(tookOverAt).toBeDefined();
      // Not while the owner's lease was live: its signal aborts at its estimate, before.
      expect(abortedBeforeTakeover).toBe(true);
      // The duplicate was turned away first (the row held, the leases live).
      expect(conflicts).toBeGreaterThan(0);
      expect(await fenceRows(scope)).toEqual([2]);
    } finally {
      proxy.close();
      await dupPool.end();
      void pool.end().catch(() => {});
    }
  }, 30_000);

  it('a named statement used again (Bind is its first message) with a 1.2 MB parameter at ~400 KB/s: guarded too, the owner completes', async () => {
    const { proxy, pool } = await throttledPool(4, 3);
    const scope = randomName('scope');
    const engine = engineOn(pool, randomName('upguard'));
    let aborted: boolean | undefined;
    const lengths: number[] = [];
    try {
      const outcome = await engine
        .execute({ key: 'k', scope }, async ({ tx, fence, signal }) => {
          await insertCharge(tx, charges, scope, fence);
          const big = 'y'.repeat(1_200_000);
          const named = { name: randomName('upguard_len'), text: 'SELECT length($1::text) AS n' };
          // Parsed and run once with a small value, then run again with the large one: the
          // second send starts with its Bind (1.2 MB), read under the idle timer without a guard.
          for (const value of ['small', big]) {
            const { rows } = await tx.query({ ...named, values: [value] });
            lengths.push(Number(rows[0].n));
          }
          aborted = signal.aborted;
          return 'done';
        })
        .then(
          (r) => r,
          (error: unknown) => String(error),
        );
      console.info('upload guard, named statement', { outcome, lengths, aborted });
      expect(lengths).toEqual([5, 1_200_000]);
      expect(outcome).toEqual({ value: 'done', replayed: false });
      expect(await fenceRows(scope)).toEqual([1]);
    } finally {
      proxy.close();
      void pool.end().catch(() => {});
    }
  }, 30_000);

  it('no pool connection free at once for a guard (pool of one): the statement goes under the idle limit as before, which ends it mid-upload', async () => {
    // The business transaction holds the only pool connection; the renewals go to the
    // engine's own connection.
    const { proxy, pool } = await throttledPool(1, 0);
    const scope = randomName('scope');
    const engine = engineOn(pool, randomName('upguard'));
    let upload: unknown;
    try {
      const outcome = await engine
        .execute({ key: 'k', scope }, async ({ tx, fence }) => {
          await insertCharge(tx, charges, scope, fence);
          upload = await tx.query(`SELECT length('${'x'.repeat(1_200_000)}') AS n`).then(
            (r) => r.rows[0].n,
            (error: { code?: string }) => error.code,
          );
          return 'done';
        })
        .then(
          (r) => r,
          (error: unknown) => (error as Error).name,
        );
      console.info('upload guard, no free connection', { upload, outcome });
      // Ended by the server's idle timer (the limit a guard would have stood in for).
      expect(upload).toBe('25P03');
      expect(outcome).not.toEqual({ value: 'done', replayed: false });
      expect(await fenceRows(scope)).toEqual([]);
    } finally {
      proxy.close();
      void pool.end().catch(() => {});
    }
  }, 30_000);

  it('on a fast link: a message under the threshold takes no guard, one over it takes one, which ends with it and goes back to the pool', async () => {
    const pool = makePool({ max: 4 });
    const scope = randomName('scope');
    const engine = engineOn(pool, randomName('upguard'), 2_000);
    // Guards armed, by their NOTICE on the pool connection that ran them (a heartbeat's
    // renewal may take a pool connection too: counting acquisitions would count it).
    let armed = 0;
    const heard = new WeakSet<object>();
    pool.on('acquire', (client) => {
      if (heard.has(client)) return;
      heard.add(client);
      client.on('notice', (notice: { message?: string }) => {
        if (notice.message === 'idem upload guard: armed') armed++;
      });
    });
    const seen: Array<{ n: number; guards: number }> = [];
    let removed = 0;
    pool.on('remove', () => {
      removed++;
    });
    try {
      const outcome = await engine.execute({ key: 'k', scope }, async ({ tx, fence }) => {
        await insertCharge(tx, charges, scope, fence);
        for (const size of [GUARDED_BYTES - 1_000, GUARDED_BYTES + 1_000]) {
          const before = armed;
          // Simple protocol: the whole message is the statement's text.
          const { rows } = await tx.query(`SELECT length('${'z'.repeat(size)}') AS n`);
          seen.push({ n: Number(rows[0].n), guards: armed - before });
        }
        return 'done';
      });
      const left = await pollUntil(guardsRunning, (n) => n === 0, 5_000);
      // The guard's connection back once its COMMIT answered (a renewal may hold one briefly).
      const idle = await pollUntil(
        async () => pool.totalCount - pool.idleCount,
        (busy) => busy === 0,
        5_000,
      );
      console.info('upload guard, fast link', { seen, left, idle, outcome });
      expect(outcome).toEqual({ value: 'done', replayed: false });
      expect(seen).toEqual([
        { n: GUARDED_BYTES - 1_000, guards: 0 },
        { n: GUARDED_BYTES + 1_000, guards: 1 },
      ]);
      expect(left).toBe(0);
      expect(await fenceRows(scope)).toEqual([1]);
      // Every connection back in the pool, none dropped by the guard.
      expect(idle).toBe(0);
      expect(removed).toBe(0);
    } finally {
      await pool.end();
    }
  }, 30_000);
});
