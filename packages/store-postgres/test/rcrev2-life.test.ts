import { InProgressError, LeaseLostError } from '@idem/core';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createPostgresIdempotency, createPostgresStore } from '../src/index.js';
import { runStatement } from '../src/pg-call.js';
import { RenewalConnection } from '../src/renewal-connection.js';
import { startLoadProbe } from './load-probe.js';
import { makePool, randomName, sleep } from './pg-env.js';
import { localPortOf, withProxiedRenewals } from './rcrev2-proxy.js';
import { insertCharge } from './take-over.js';

/**
 * rcrev2: adversarial review (second round) of RenewalConnection's lifecycle and queue
 * (582d21e): pool.end() mid-flight, outages that refuse connections, linger races, floods on a
 * silent connection, and serializable sessions with takeovers racing renewals on every route.
 */
const schema = inject('pgSchema');
const table = inject('pgTable');
const charges = `"${schema}".rcrev2_life_charges`;
const raw = makePool({ max: 3 });

beforeAll(async () => {
  await raw.query(`CREATE TABLE IF NOT EXISTS ${charges} (
    id bigserial PRIMARY KEY, scope text NOT NULL, fence bigint NOT NULL)`);
});
afterAll(() => raw.end());

const backends = async (app: string) =>
  Number(
    (
      await raw.query(
        'SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1',
        [app],
      )
    ).rows[0].n,
  );

type Internals = { waiting: unknown[]; client: unknown };

describe('rcrev2: renewal connection lifecycle', () => {
  // FIXED (closed at once when the pool was ended and no execution holds a record; a lingering
  // connection checks every 200 ms). FINDING (LOW): pool.end() resolves while the engine still has a backend open on the server
  // with the pool's options (the renewal connection lingers 10 s after the last execution, and
  // nothing closes it when the pool ends). Repro: one execution holding; pool.end() called
  // mid-flight; the execution completes, pool.end() resolves; the server still lists a backend
  // with the pool's application_name for up to 10 s. Why it matters: code that ends the pool
  // and then drops the database / runs a migration that needs no sessions (DROP DATABASE,
  // pg_terminate-free maintenance), or counts the app's connections, sees an unexpected one;
  // the README says "count it ... one per engine", but not that it outlives pool.end().
  // Suggested fix: listen to the pool's end (pg-pool sets `ending`; wrap/observe pool.end or
  // check `pool.ending` when the last user leaves) and close the own connection at once then.
  it('after pool.end() resolved, no backend of the engine is left on the server', async () => {
    const app = randomName('r2end');
    const pool = makePool({ max: 2, application_name: app });
    const engine = createPostgresIdempotency<string>({
      store: createPostgresStore({
        pool,
        table,
        keyPrefix: randomName('r2end'),
        statementTimeoutMs: 1_000,
      }),
      leaseMs: 1_000,
      heartbeatMs: 200,
    });
    const scope = randomName('scope');
    let signal: AbortSignal | undefined;
    let ending: Promise<void> | undefined;
    const result = await engine.execute({ key: 'k', scope }, async ({ tx, fence, signal: s }) => {
      signal = s;
      await insertCharge(tx, charges, scope, fence);
      ending = pool.end();
      await sleep(1_500);
      return 'done';
    });
    await ending;
    await sleep(100);
    const left = await backends(app);
    console.info('after pool.end', { result, aborted: signal?.aborted, left });
    expect(result).toEqual({ value: 'done', replayed: false });
    expect(signal?.aborted).toBe(false);
    expect(left).toBe(0);
  });

  // Held: the server refusing every connection for 1.5 s: each statement fails within its
  // limit, at most one connection attempt per statement (no reopen storm), nothing stays
  // queued, and the first statement after the outage lands.
  it('an outage that refuses connections ends by itself; attempts bounded, nothing queued', async () => {
    await withProxiedRenewals(
      { max: 1, holdOne: true, openMs: 1_000, statementMs: 300 },
      async ({ proxy, rc }) => {
        proxy.state.refuse = true;
        proxy.dropAll();
        const before = proxy.connections();
        let sent = 0;
        let slowest = 0;
        const end = performance.now() + 1_500;
        while (performance.now() < end) {
          const t = performance.now();
          await runStatement(rc, 'renewHeld', { text: 'SELECT 1' }, 300).then(
            () => {},
            () => {},
          );
          slowest = Math.max(slowest, performance.now() - t);
          sent++;
          await sleep(50);
        }
        const attempts = proxy.connections() - before;
        proxy.state.refuse = false;
        const t = performance.now();
        await runStatement(rc, 'renewHeld', { text: 'SELECT 1' }, 300);
        const after = performance.now() - t;
        await sleep(50);
        console.info('refusing outage', {
          sent,
          attempts,
          slowest: Math.round(slowest),
          after: Math.round(after),
        });
        // Bounded (slack for a loaded machine's event loop).
        expect(slowest).toBeLessThan(1_500);
        expect(attempts).toBeLessThanOrEqual(sent + 1);
        expect(after).toBeLessThan(2_000);
        expect((rc as unknown as Internals).waiting.length).toBe(0);
      },
    );
  });

  // Held: linger closes racing statements and use(): 80 rounds with a 25 ms linger and random
  // pauses around it; every statement lands.
  it('linger close racing statements and use(): every statement lands', async () => {
    const pool = makePool({ max: 1 });
    const held = await pool.connect();
    const rc = new RenewalConnection(pool, 1_000, 500, 25);
    let failed = 0;
    try {
      for (let i = 0; i < 80; i++) {
        const unused = rc.use();
        const first = runStatement(rc, 'renewHeld', { text: 'SELECT 1' }, 500);
        if (i % 2 === 0) unused();
        await first.catch(() => failed++);
        await sleep(Math.floor(Math.random() * 50));
        await runStatement(rc, 'renewHeld', { text: 'SELECT 1' }, 500).catch(() => failed++);
        unused();
      }
      expect(failed).toBe(0);
    } finally {
      held.release();
      await pool.end();
    }
  });

  // Held: 300 statements at once on a renewal connection that fell silent (pool full): each
  // settles within its limit (plus slack), the queue empties, the next statement reopens.
  it('a flood on a silent renewal connection: bounded time, queue emptied, reopened', async () => {
    await withProxiedRenewals(
      { max: 1, holdOne: true, openMs: 1_000, statementMs: 300 },
      async ({ proxy, rc }) => {
        proxy.freeze(localPortOf((rc as unknown as Internals).client));
        const t = performance.now();
        const times = await Promise.all(
          Array.from({ length: 300 }, () =>
            runStatement(rc, 'renewHeld', { text: 'SELECT 1' }, 300).then(
              () => performance.now() - t,
              () => performance.now() - t,
            ),
          ),
        );
        await sleep(400);
        const queued = (rc as unknown as Internals).waiting.length;
        await runStatement(rc, 'renewHeld', { text: 'SELECT 1' }, 300);
        console.info('flood', { slowest: Math.round(Math.max(...times)), queued });
        // Bounded: the 300 ms limit plus slack for a loaded machine's event loop.
        expect(Math.max(...times)).toBeLessThan(1_500);
        expect(queued).toBe(0);
      },
    );
  });
});

/**
 * Sessions default to serializable (`default_transaction_isolation`); four owners hold (lease
 * 500 ms, heartbeats 100 ms) while the pool flips between full and free (renewals on every
 * route) and, once all hold, duplicates hammer each key. Asserts safety (no duplicate runs
 * while its owner's signal is not aborted, one business row per key); returns what aborted.
 *
 * Whether the owner's signal is aborted is read from the signal itself when a duplicate runs,
 * not from an 'abort' listener: on a loaded machine an owner's lease can be lost before its
 * operation starts (the acquisition and the wait for a pool connection outlast the lease, and
 * the first renewal, through the full pool, is not answered within its grace), and a listener
 * added to a signal already aborted is never called. Such an owner's heartbeats have ended,
 * so its transaction is ended by its idle limit and a duplicate takes the key over at once:
 * the signal was aborted long before, which a listener-only tally reported as "owner aborted:
 * false" (the rcrev2 failure on a loaded 2-core machine; no renewal of that owner was sent).
 */
async function serializableScenario(): Promise<{ aborted: string[]; results: string[] }> {
  const iso = process.env.R2_RC ? {} : { options: '-c default_transaction_isolation=serializable' };
  const pool = makePool({ max: 6, ...iso });
  const dupPool = makePool({ max: 4, ...iso });
  const keyPrefix = randomName('r2ser');
  const scope = randomName('scope');
  const settings = { leaseMs: 500, heartbeatMs: 100, maxHoldMs: 60_000 };
  const engine = createPostgresIdempotency<string>({
    store: createPostgresStore({ pool, table, keyPrefix, statementTimeoutMs: 1_000 }),
    ...settings,
    onEvent: (event) => {
      if (event.type === 'store_error') {
        const e = event.error as Error & { cause?: { code?: string; message?: string } };
        log.push(
          `${at()} store_error ${event.method} ${Math.round(event.durationMs ?? 0)}ms ${e.message} ${e.cause?.code ?? ''}`,
        );
      }
    },
  });
  const dups = createPostgresIdempotency<string>({
    store: createPostgresStore({ pool: dupPool, table, keyPrefix, statementTimeoutMs: 1_000 }),
    ...settings,
  });
  const keys = ['a', 'b', 'c', 'd'];
  const aborted: string[] = [];
  // Each owner's signal, as its operation received it.
  const signals = new Map<string, AbortSignal>();
  const log: string[] = [];
  const t0 = performance.now();
  const at = () => Math.round(performance.now() - t0);
  let duplicateRuns = 0;
  let stop = false;
  // Duplicates that ran while their owner's signal was not aborted: when, and for which key.
  const early: { key: string; at: number }[] = [];
  // Keys a duplicate ran for (took over).
  const ran = new Set<string>();
  // The pools' connections opened beforehand (an acquisition that also opens a backend is
  // slow on a loaded machine, and an owner's first renewal waits for it).
  for (const p of [pool, dupPool]) {
    const warm = await Promise.all(keys.map(() => p.connect()));
    for (const c of warm) c.release();
  }
  const probe = startLoadProbe();
  try {
    // An owner whose execution failed before its operation ran (nothing held, nothing
    // written: an acquisition or a pool connection not had within the 1 s statement limit on
    // a loaded machine, or its own acquisition that landed after that limit, now in progress)
    // tries again: the scenario is about owners that hold.
    const own = async (key: string): Promise<string> => {
      for (let attempt = 1; ; attempt++) {
        let started = false;
        try {
          const r = await engine.execute({ key, scope }, async ({ tx, fence, signal }) => {
            started = true;
            signals.set(key, signal);
            const onAbort = () => {
              aborted.push(key);
              log.push(`${at()} owner ${key} aborted: ${(signal.reason as Error)?.message}`);
            };
            // Lost before the operation started: no 'abort' event would come (the engine now
            // ends such an execution before its operation; kept as a check of that).
            if (signal.aborted) onAbort();
            else signal.addEventListener('abort', onAbort);
            await insertCharge(tx, charges, scope, fence);
            log.push(`${at()} owner ${key} holds fence ${fence}`);
            await sleep(2_500);
            log.push(`${at()} owner ${key} returns`);
            return 'owner';
          });
          return r.value;
        } catch (e) {
          const { name, message } = e as Error;
          const before = [
            'StoreUnavailableError',
            'TransactionNotCommittedError',
            'InProgressError',
            // The lease lost while the transaction was opened: the engine ends it unrun.
            'LeaseLostError',
          ];
          if (!started && attempt < 20 && before.includes(name)) {
            log.push(`${at()} owner ${key} not started (${name} ${message}): tried again`);
            await sleep(100);
            continue;
          }
          log.push(`${at()} owner ${key} failed: ${name} ${message}`);
          return 'failed';
        }
      }
    };
    const owners = keys.map(own);
    const flipper = (async () => {
      while (!stop && !process.env.R2_NOFLIP) {
        const taken: pg.PoolClient[] = [];
        for (let i = 0; i < 2; i++) taken.push(await pool.connect());
        await sleep(41);
        for (const c of taken) c.release();
        await sleep(59);
      }
    })();
    // The duplicates start once every owner holds its record.
    const holdEnd = performance.now() + 15_000;
    while (
      log.filter((l) => l.includes('holds')).length < keys.length &&
      performance.now() < holdEnd
    )
      await sleep(10);
    expect(log.filter((l) => l.includes('holds')).length, log.join('\n')).toBe(keys.length);
    const hammer = Promise.all(
      keys.map(async (key) => {
        const end = performance.now() + 2_600;
        while (performance.now() < end) {
          try {
            await dups.execute({ key, scope }, async ({ tx, fence }) => {
              duplicateRuns++;
              const ownerAborted = signals.get(key)?.aborted === true;
              if (!ownerAborted) early.push({ key, at: performance.now() });
              ran.add(key);
              log.push(
                `${at()} duplicate ran ${key} fence ${fence} (owner aborted: ${ownerAborted})`,
              );
              await insertCharge(tx, charges, scope, fence);
              return 'dup';
            });
          } catch (error) {
            if (!(error instanceof InProgressError))
              log.push(
                `${at()} duplicate ${key} error ${(error as Error).name} ${(error as Error).message}`,
              );
          }
          await sleep(30);
        }
      }),
    );
    const results = await Promise.all(owners);
    await hammer;
    stop = true;
    await flipper;
    const { rows } = await raw.query(`SELECT count(*)::int AS n FROM ${charges} WHERE scope = $1`, [
      scope,
    ]);
    console.info('serializable', { duplicateRuns, aborted, rows: rows[0].n, log });
    // Safety: a duplicate ran only for a key whose owner's signal had aborted before, while
    // the machine kept up with the lease (500 ms, heartbeats 100 ms: a round trip, event-loop
    // hold-ups included, under 400 ms over the owner's last lease). Held up past that, the
    // owner may lose the lease without an abort in time; its outcome is then refused by the
    // store (it fails, and the duplicate's row is the key's one row, asserted below).
    for (const e of early) {
      const slowness = probe.slowness(e.at - 2 * settings.leaseMs, e.at);
      const ownerResult = results[keys.indexOf(e.key)];
      if (slowness >= settings.leaseMs - settings.heartbeatMs)
        expect(ownerResult, `owner ${e.key} held up ${Math.round(slowness)} ms`).toBe('failed');
      else
        expect(
          log.filter((l) => l.includes('(owner aborted: false)')),
          `slowness ${Math.round(slowness)} ms`,
        ).toEqual([]);
    }
    // A key taken over: its owner's signal aborted (at the latest when the owner's transaction
    // ended and freed the row) and its outcome refused.
    for (const key of ran) {
      expect(signals.get(key)?.aborted, `owner ${key}'s signal`).toBe(true);
      expect(results[keys.indexOf(key)], `owner ${key}'s result`).toBe('failed');
    }
    // Exactly once: one business row per key (the owner's, or the duplicate's after the
    // owner's transaction rolled back).
    expect(rows[0].n).toBe(4);
    for (const r of results) expect(['owner', 'failed']).toContain(r);
    return { aborted: [...aborted], results };
  } finally {
    stop = true;
    await probe.stop();
    await pool.end().catch(() => {});
    await dupPool.end();
  }
}

describe('rcrev2: serializable sessions', () => {
  // Held: safety (exactly once, no duplicate run while the owner's signal is not aborted).
  it('serializable sessions, routes flipping, duplicates hammering: exactly once, no duplicate while not aborted', async () => {
    await serializableScenario();
  });

  // What the scenario above met on a loaded machine, made deterministic: the lease is lost
  // while the execution waits for a pool connection (its renewals through the full pool are
  // not answered) and nobody takes the key over meanwhile, so the row lock succeeds. Was (the
  // serial review): the operation then ran with its signal ALREADY aborted (a listener added
  // then was never called), its heartbeats ended, its transaction was ended by its idle limit
  // and a duplicate ran beside it. Now the engine ends the transaction before the operation
  // starts: the caller gets LeaseLostError, the key goes back, the duplicate runs once.
  it('a lease lost while waiting for a pool connection: the operation never starts (LeaseLostError); a duplicate runs after, once', async () => {
    const pool = makePool({ max: 1 });
    const dupPool = makePool({ max: 1 });
    const keyPrefix = randomName('r2pre');
    const scope = randomName('scope');
    const settings = { leaseMs: 300, heartbeatMs: 100, maxHoldMs: 60_000 };
    const base = createPostgresStore({ pool, table, keyPrefix, statementTimeoutMs: 2_000 });
    let taken: pg.PoolClient | undefined;
    let acquired = false;
    // Right after the acquisition, the test takes the pool's one connection for 800 ms.
    const store = new Proxy(base, {
      get(target, prop, receiver) {
        if (prop === 'acquire')
          return async (input: Parameters<typeof base.acquire>[0]) => {
            const result = await base.acquire(input);
            acquired = true;
            taken = await pool.connect();
            setTimeout(() => taken?.release(), 800);
            return result;
          };
        const value = Reflect.get(target, prop, receiver);
        return typeof value === 'function' ? value.bind(target) : value;
      },
    });
    const engine = createPostgresIdempotency<string>({ store, ...settings });
    const dups = createPostgresIdempotency<string>({
      store: createPostgresStore({ pool: dupPool, table, keyPrefix, statementTimeoutMs: 2_000 }),
      ...settings,
    });
    let ownerRan = false;
    let ownerSettled = false;
    try {
      const owner = engine
        .execute({ key: 'k', scope }, async ({ tx, fence }) => {
          ownerRan = true;
          await insertCharge(tx, charges, scope, fence);
          // Idle past the transaction's idle limit (a lease and a margin, 420 ms here).
          await sleep(1_500);
          return 'owner';
        })
        .then(
          (r) => r.value,
          (e: unknown) => (e as Error).name,
        )
        .finally(() => {
          ownerSettled = true;
        });
      const end = performance.now() + 5_000;
      let dupResult: string | undefined;
      while (dupResult === undefined && performance.now() < end) {
        await sleep(50);
        // The duplicates start once the owner's execution got its connection: it ran its
        // operation, or ended without running it (before, they would take the key over while
        // the owner waited for the pool, and the owner's row lock would find it taken).
        if (!acquired || !(ownerRan || ownerSettled)) continue;
        try {
          dupResult = (
            await dups.execute({ key: 'k', scope }, async ({ tx, fence }) => {
              await insertCharge(tx, charges, scope, fence);
              return 'dup';
            })
          ).value;
        } catch (error) {
          // Not run: the key still held, or (a loaded machine) no pool connection in time, or
          // its acquisition answered too late in its 300 ms lease (seen in CI's lanes).
          expect(
            error instanceof InProgressError ||
              error instanceof LeaseLostError ||
              (error as Error).name === 'TransactionNotCommittedError',
            String(error),
          ).toBe(true);
        }
      }
      const result = await owner;
      const { rows } = await raw.query(
        `SELECT count(*)::int AS n FROM ${charges} WHERE scope = $1`,
        [scope],
      );
      console.info('lost before the operation', {
        ownerRan,
        dupResult,
        result,
      });
      expect(ownerRan).toBe(false);
      expect(dupResult).toBe('dup');
      expect(result).toBe('LeaseLostError');
      expect(rows[0].n).toBe(1);
    } finally {
      await pool.end().catch(() => {});
      await dupPool.end();
    }
  });

  // FINDING (MEDIUM, liveness; not isolated to RenewalConnection): with sessions defaulting to
  // serializable (pool option `-c default_transaction_isolation=serializable`), lease 500 ms,
  // heartbeat 100 ms, statement limit 1 s, four concurrent owners, healthy owners' signals abort
  // ("The lease could not be renewed before it passed") in most runs (seen in 6 of 7 runs, also
  // without the route flipping: R2_NOFLIP=1) while the same scenario under read committed never
  // aborted (4 of 4). No store_error was reported: the renewals were slow, not failed. Unverified
  // hypothesis:
  // runStep's 40001 retries (exponential pauses, up to 8 tries within the 1 s statement limit,
  // which is longer than the lease) caused by SSI conflicts between different keys' acquire /
  // renew_held (index-page predicate locks). Suggested fix: bound a renewal's retries by what is
  // left of the lease (not the statement limit), and run renew_held / the acquire under an
  // explicit READ COMMITTED (`SET default_transaction_isolation` on the renewal connection, or
  // `BEGIN ISOLATION LEVEL READ COMMITTED` wrapper) so SSI never fails them; at least
  // document that serializable defaults need leases well above the statement limit.
  // Not kept as a test: it reproduced in most runs but not all; an it.fails that passes now
  // and then would fail the suite at random. Later (lead, after the routing change that puts
  // the own connection first and sets its sessions to read committed): the scenario above, run
  // as is, aborted no owner in 5 of 5 runs; the build before that change also aborted none in
  // 3 runs on that day's machine, so the cause stays unconfirmed.
});
