import { InProgressError } from '@idem/core';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import {
  createPostgresIdempotency,
  createPostgresStore,
  recommendedPoolConfig,
} from '../src/index.js';
import { DATABASE_URL, makePool, randomName, sleep } from './pg-env.js';
import { type CutOffScenario, cutOffOwner, insertCharge } from './take-over.js';
import { startProxy, type TcpProxy } from './tcp-proxy.js';

/**
 * The heartbeats of a transactional execution whose business transaction holds the record
 * renew its held lease through the pool, which a takeover honours: an owner whose network
 * falls silent cannot renew, so its signal aborts at its lease estimate, before a duplicate
 * can take over. They used to answer "still held" at once, and such an owner ran on
 * unaborted beside the duplicate (up to the maximum hold).
 */
const schema = inject('pgSchema');
const table = inject('pgTable');
const charges = `"${schema}".silent_owner_charges`;
const raw = makePool({ max: 2 });
const url = new URL(DATABASE_URL);
/** How late the event loop of a loaded machine may run the watchdog that aborts the signal. */
const LAG_MS = 150;

beforeAll(async () => {
  await raw.query(`CREATE TABLE IF NOT EXISTS ${charges} (
    id bigserial PRIMARY KEY, scope text NOT NULL, fence bigint NOT NULL)`);
});
afterAll(() => raw.end());

const options = { leaseMs: 1_000, heartbeatMs: 200 };

/**
 * {@link cutOffOwner} through a proxy that `cutOff` drives; checks the owner's signal aborted
 * no later than the takeover (give or take the event loop's lag) and within about a lease of
 * the cut.
 */
async function ownerCutOff({
  cutOff,
  ...scenario
}: Omit<CutOffScenario, 'ownerUrl' | 'cutOff' | 'charges' | 'table'> & {
  cutOff: (proxy: TcpProxy) => Promise<void>;
}) {
  const proxy = await startProxy({ host: url.hostname, port: Number(url.port || 5432) });
  const via = new URL(DATABASE_URL);
  via.hostname = '127.0.0.1';
  via.port = String(proxy.port);
  try {
    const { abortedAt, tookOverAt, cutAt } = await cutOffOwner({
      ...scenario,
      ownerUrl: via.toString(),
      charges,
      table,
      cutOff: () => cutOff(proxy),
    });
    const aborted = abortedAt();
    expect(aborted, 'the owner ran on, unaborted, when the duplicate took over').toBeDefined();
    // Due before the takeover; the loop of a loaded machine may run it a little late.
    expect(aborted as number).toBeLessThanOrEqual(tookOverAt + LAG_MS);
    // And within about one lease of the cut (its last renewal's start), or core's grace more
    // for a renewal that ran late.
    const grace = Math.max(10, scenario.engine.heartbeatMs / 5);
    expect((aborted as number) - cutAt).toBeLessThan(scenario.engine.leaseMs + grace + LAG_MS);
  } finally {
    await proxy.close();
  }
}

describe('the network of an owner holding its record falls silent', () => {
  for (const pool of ['a pool without limits', 'recommendedPoolConfig()'] as const) {
    it(`${pool}: its signal aborts before a duplicate takes the key over, one row`, () =>
      ownerCutOff({
        poolConfig: pool === 'recommendedPoolConfig()' ? recommendedPoolConfig() : {},
        statementTimeoutMs: 500,
        engine: options,
        cutOff: async (proxy) => {
          proxy.mode = 'blackhole';
        },
      }));
  }
});

describe('the answers to the owner stall, then its network falls silent', () => {
  it('an extend answered late renews nothing for a later heartbeat: the signal aborts before the takeover', () =>
    // The server handles the extend of the first heartbeat after the stall (its idle limit
    // runs from then) but the answer only arrives 545 ms into the stall, as the network falls
    // silent for good. A heartbeat that started more than the look-back after that extend was
    // sent must not count its answer as a renewal from its own start: its lease estimate would
    // pass after the server ended the transaction and a duplicate took over. (Heartbeats
    // every 100 ms: several start within the stall, before and after the look-back.)
    ownerCutOff({
      statementTimeoutMs: 500,
      engine: { leaseMs: 1_000, heartbeatMs: 100 },
      cutOff: async (proxy) => {
        proxy.mode = 'hold-answers';
        await sleep(545);
        proxy.mode = 'blackhole';
        proxy.releaseHeld();
      },
    }));
});

describe('a statement of the operation outlasts the lease', () => {
  it('the held lease is renewed meanwhile: the signal never aborts, a duplicate gets 409, one row', async () => {
    // The client waits for the long statement (the test pool's query_timeout would not).
    const pool = makePool({ max: 4, query_timeout: 20_000 });
    const keyPrefix = randomName('long');
    const scope = randomName('scope');
    const engine = createPostgresIdempotency<string>({
      store: createPostgresStore({ pool, table, keyPrefix }),
      // A lease a loaded machine's pool renewals meet (1 s lost it in CI's lanes).
      leaseMs: 2_000,
      heartbeatMs: 400,
    });
    let signal: AbortSignal | undefined;
    let started!: () => void;
    const running = new Promise<void>((resolve) => {
      started = resolve;
    });
    try {
      const first = engine.execute({ key: 'k', scope }, async ({ tx, fence, signal: s }) => {
        signal = s;
        await insertCharge(tx, charges, scope, fence);
        await tx.query("SET LOCAL statement_timeout = '30s'");
        started();
        // Two and a half leases in one statement.
        await tx.query('SELECT pg_sleep(5)');
        return 'done';
      });
      await running;
      await sleep(3_000); // past the record's own lease
      await expect(
        engine.execute({ key: 'k', scope }, async () => 'duplicate'),
      ).rejects.toBeInstanceOf(InProgressError);
      expect(await first).toEqual({ value: 'done', replayed: false });
      expect(signal?.aborted).toBe(false);
      const { rows } = await pool.query(`SELECT fence FROM ${charges} WHERE scope = $1`, [scope]);
      expect(rows.map((r) => Number(r.fence))).toEqual([1]);
    } finally {
      await pool.end();
    }
  });
});
