import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { latenessAround, sampleLoopLateness } from '../../../scripts/loop-lateness.js';
import { RenewalConnection } from '../src/renewal-connection.js';
import { DATABASE_URL, randomName } from './pg-env.js';

/** pg's overloaded methods, called through with whatever they were given. */
type Loose = (...args: unknown[]) => Promise<void>;
/**
 * pgrev24: a RenewalConnection over a real pool whose `Client` class gates the own
 * connection's openings (told apart by its `statement_timeout`, the store's limit), one
 * script entry per opening: `stall` (connect() never settles: a lost SYN, given up at
 * openMs), `fail` (refused at once), `pass`, a number (connects after that many ms), or
 * `{ at }` (connects at once, and its connect() settles no sooner than `at` ms after the
 * call: the server's set-up runs during the delay, so a loaded machine's slow backend start
 * does not eat into what is left of the opening's limit after it). Own
 * backends carry `<tag>-own` as application_name, pool backends `<tag>-pool`. Counts the
 * openings running at once (RenewalConnection.connect wrapped), the pool's 'connect' and
 * 'remove' events for own clients, and pool.connect() calls.
 */
export const STATEMENT_MS = 2_000;

export type Step = 'stall' | 'fail' | 'pass' | number | { at: number };

export function harness(opts: { max?: number; openMs?: number; script: (n: number) => Step }) {
  sampleLoopLateness();
  const tag = randomName('p24');
  const stats = {
    ownConstructed: 0,
    running: 0,
    maxRunning: 0,
    openings: 0,
    connectEvents: 0,
    removeEvents: 0,
    poolConnects: 0,
    /** Statements with a time limit (the routes' sends) running on own clients, at most at once. */
    ownSends: 0,
    maxOwnSends: 0,
    /** Those statements sent on own clients, in all. */
    ownSent: 0,
    /**
     * The own connection's real connects to the server (after a scripted delay), from call
     * to settlement (performance.now()): the server's set-up time, which the renewal
     * connection does not control (under CI load, a backend fork and authentication).
     */
    connects: [] as Array<{ from: number; to: number }>,
  };
  const ownClients: pg.Client[] = [];
  class GatedClient extends pg.Client {
    constructor(config: pg.ClientConfig) {
      const own = (config as { statement_timeout?: unknown }).statement_timeout === STATEMENT_MS;
      super({ ...config, application_name: `${tag}-${own ? 'own' : 'pool'}` });
      if (!own) return;
      const step = opts.script(stats.ownConstructed++);
      ownClients.push(this);
      const connect = this.connect.bind(this) as unknown as Loose;
      const query = this.query.bind(this) as unknown as Loose;
      const self = this as unknown as { connect: Loose; query: Loose };
      const timed = (...args: unknown[]) => {
        const span = { from: performance.now(), to: Number.POSITIVE_INFINITY };
        stats.connects.push(span);
        const done = () => {
          span.to = performance.now();
        };
        const connecting = connect(...args);
        connecting.then(done, done);
        return connecting;
      };
      self.connect = (...args) => {
        if (step === 'pass') return timed(...args);
        if (step === 'stall') return new Promise(() => {});
        if (step === 'fail')
          return Promise.reject(
            Object.assign(new Error('connect ECONNREFUSED (pgrev24 gate)'), {
              code: 'ECONNREFUSED',
            }),
          );
        if (typeof step === 'number') return sleep(step).then(() => timed());
        // Connects now; settles at `at` at the earliest. Only the set-up's time past `at`
        // delayed the opening: that part counts as the server's (see `connects`).
        const due = performance.now() + step.at;
        const connecting = connect(...args);
        const late = () => {
          const now = performance.now();
          if (now > due) stats.connects.push({ from: due, to: now });
        };
        connecting.then(late, late);
        const atDue = () => sleep(Math.max(0, due - performance.now()));
        return connecting.then(
          (value) => atDue().then(() => value),
          (error: unknown) => atDue().then(() => Promise.reject(error)),
        );
      };
      self.query = (...args) => {
        const config = args[0] as { query_timeout?: unknown } | undefined;
        const result = query(...args);
        if (typeof config !== 'object' || !config?.query_timeout) return result;
        stats.ownSends++;
        stats.ownSent++;
        stats.maxOwnSends = Math.max(stats.maxOwnSends, stats.ownSends);
        const done = () => {
          stats.ownSends--;
        };
        result.then(done, done);
        return result;
      };
    }
  }
  const pool = new pg.Pool({
    connectionString: DATABASE_URL,
    max: opts.max ?? 1,
    Client: GatedClient,
  } as unknown as pg.PoolConfig);
  pool.on('error', () => {});
  pool.on('connect', (c) => {
    if (ownClients.includes(c as unknown as pg.Client)) stats.connectEvents++;
  });
  pool.on('remove', (c) => {
    if (ownClients.includes(c as unknown as pg.Client)) stats.removeEvents++;
  });
  const connect = pool.connect.bind(pool);
  (pool as unknown as { connect: (cb?: unknown) => unknown }).connect = (cb?: unknown) => {
    stats.poolConnects++;
    return (connect as (cb?: unknown) => unknown)(cb);
  };
  const rc = new RenewalConnection(pool, opts.openMs ?? 6_000, STATEMENT_MS, 300);
  const inner = rc as unknown as {
    connect: () => Promise<pg.Client>;
    client?: pg.Client;
    opening?: Promise<pg.Client>;
    attempts: number;
    failures: number;
    quietUntil: number;
    growTimer?: NodeJS.Timeout;
    waiting: unknown[];
  };
  const original = inner.connect.bind(rc);
  inner.connect = async () => {
    stats.openings++;
    stats.running++;
    stats.maxRunning = Math.max(stats.maxRunning, stats.running);
    try {
      return await original();
    } finally {
      stats.running--;
    }
  };
  const admin = new pg.Client({ connectionString: DATABASE_URL });
  return {
    tag,
    pool,
    rc,
    inner,
    stats,
    admin,
    /** Backends of the own connection (or of the pool) in pg_stat_activity. */
    async backends(kind: 'own' | 'pool' = 'own'): Promise<number> {
      const { rows } = await admin.query(
        'SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1',
        [`${tag}-${kind}`],
      );
      return rows[0].n as number;
    },
    /**
     * Backends of that kind once at most `n` are left, or after `ms`: a backend whose client
     * closed leaves pg_stat_activity when the server's process has exited, which a loaded
     * machine delays (a fixed sleep before counting failed CI so).
     */
    async backendsDown(kind: 'own' | 'pool', n: number, ms = 5_000): Promise<number> {
      const end = performance.now() + ms;
      let count = await this.backends(kind);
      while (count > n && performance.now() < end) {
        await sleep(25);
        count = await this.backends(kind);
      }
      return count;
    },
    /** Terminates the own connection's backends; waits until the client forgot it. */
    async killOwn(): Promise<number> {
      const { rowCount } = await admin.query(
        'SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1',
        [`${tag}-own`],
      );
      for (let i = 0; i < 100 && inner.client !== undefined; i++) await sleep(20);
      return rowCount ?? 0;
    },
    async end() {
      await Promise.race([pool.end(), sleep(2_000)]);
      await admin.end().catch(() => {});
    },
  };
}

export const q = (ms?: number) =>
  ms === undefined
    ? ({ text: 'select 1 AS one' } as pg.QueryConfig)
    : ({ text: 'select 1 AS one', query_timeout: ms } as pg.QueryConfig);

/** A statement's outcome and when it settled (ms after `t0`). */
export function settle(p: Promise<unknown>, t0: number): Promise<string> {
  return p.then(
    () => `ok ${Math.round(performance.now() - t0)}`,
    (e: unknown) =>
      `${(e as Error).name}:${(e as Error).message.slice(0, 36)} ${Math.round(performance.now() - t0)}`,
  );
}

export const msOf = (outcome: string) => Number(outcome.split(' ').at(-1));

/**
 * The part of a statement's time (`outcome` settled `msOf(outcome)` ms after `t0`) the renewal
 * connection is answerable for: without the real connects to the server that ended within it
 * (the server's set-up, see `stats.connects`), and without the event loop's lateness in the
 * windows where it could delay the product's timers due `due` ms after `t0` (see
 * scripts/loop-lateness.ts; lateness within a connect is in that connect's time already).
 * A timer chained onto another, a wait for a later opening, or a hedge begun late still
 * count in full.
 */
export function ownMs(
  outcome: string,
  t0: number,
  due: readonly number[],
  connects: ReadonlyArray<{ from: number; to: number }>,
): number {
  const end = t0 + msOf(outcome);
  const within = connects.filter((c) => c.from >= t0 && c.to <= end);
  const server = within.reduce((sum, c) => sum + (c.to - c.from), 0);
  return msOf(outcome) - server - latenessAround(t0, end, due, within);
}

/** Polls until `check` holds or `ms` passed. */
export async function until(check: () => boolean | Promise<boolean>, ms: number): Promise<boolean> {
  const end = performance.now() + ms;
  while (performance.now() < end) {
    if (await check()) return true;
    await sleep(25);
  }
  return check();
}
