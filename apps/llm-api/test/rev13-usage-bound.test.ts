import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../src/config.js';
import { type RunningServer, startServer } from '../src/server.js';
import { answer } from './answers.js';
import { type OwnRedis, startOwnRedis } from './own-redis.js';
import { randomPrefix } from './redis.js';

/** Long enough for HVALS of every bill to answer: the time goes to the app's own work. */
const STORE_TIMEOUT_MS = 15_000;
/** Bills already in the ledger: a busy API's few days. */
const BILLS = 500_000;

describe('rev13: GET /v1/usage on a Redis ledger of many bills', () => {
  let redis: OwnRedis;
  let server: RunningServer;
  const prefix = randomPrefix();
  beforeAll(async () => {
    redis = await startOwnRedis();
    const raw = new Redis(redis.url);
    for (let from = 0; from < BILLS; from += 10_000) {
      const batch = raw.pipeline();
      for (let i = from; i < from + 10_000; i++) {
        const messageId = `msg_${i.toString(16).padStart(32, '0')}`;
        batch.hset(
          `${prefix}ledger`,
          messageId,
          JSON.stringify({
            messageId,
            model: 'local-1',
            promptTokens: 10,
            completionTokens: 30,
            totalTokens: 40,
            fence: 1,
            billedAt: 1_764_900_000_000 + i,
          }),
        );
      }
      await batch.exec();
    }
    raw.disconnect();
    server = await startServer(
      parseConfig({
        PORT: '0',
        REDIS_URL: redis.url,
        IDEM_KEY_PREFIX: prefix,
        IDEM_STORE_TIMEOUT_MS: String(STORE_TIMEOUT_MS),
        MODEL_CHUNK_DELAY_MS: '1',
        IDEM_OTEL: 'off',
      }),
    );
  }, 60_000);
  afterAll(async () => {
    await server?.close();
    await redis?.stop();
  });

  // FIXED (was FINDING MEDIUM, bounded time / availability): `GET /v1/usage` (src/app.ts) read the whole
  // ledger on every call (`ledger.entries()`: Redis HVALS of every bill ever, PostgreSQL every
  // row, the memory ledger up to 100,000), parses, sorts and serialises all of it on the event
  // loop, and answers it whole. The endpoint needs no credentials. With 500,000 bills (a busy
  // API's few days) one call took 5-10 s here, although the README
  // bounds every store call, `/v1/usage` named, by IDEM_STORE_TIMEOUT_MS; meanwhile the event
  // loop is blocked, so every other request waits (a POST /api/messages took 7.5 s), Redis
  // itself is blocked ~0.7 s per HVALS (every instance's calls wait), and heartbeats wait too
  // (not shown here: a hold past a lease, on a larger ledger or with calls at once, would let
  // keys lapse and run twice). Four
  // calls at once made every POST answer 503 for 7.4 s (the connection flooded with 350 MB of
  // replies), and a liveness probe (/healthz, Kubernetes' default timeout 1 s) waits as long
  // as the event loop is held, so an orchestrator restarts a healthy process. The README's
  // limit names only DynamoDB's scan. Reproduce: this test (500,000 bills in its own Redis).
  // Fixed: `data` lists the most recent bills only (`?limit=`, 1,000 by default, at most
  // 10,000) and `totals` covers all of them: Redis reads the ledger with HSCAN in small steps,
  // giving the event loop back between them (its slowest /healthz went from 3.6-4.9 s to
  // under 0.1 s here), PostgreSQL sums and pages in the database, the memory ledger sums in
  // one pass; concurrent reads share one. DynamoDB still scans (its documented limit).
  // Asserted against the read's own duration, not against 1 s: on a loaded machine (CI's
  // lanes, load 10-30 on 2 cores) a probe can wait over a second for a CPU or a GC pause while
  // the loop is given back at every step (the test flaked so). Held, a probe waited for most
  // of the read (3.6-4.9 s of 5-10 s); given back, the slowest waits a small share of it
  // (84 ms of 6.4 s here beside two CPU burners).
  it('holds no other request while it is read: every /healthz answers within a small share of the read', async () => {
    const started = Date.now();
    let done = false;
    const usage = answer(`${server.url}/v1/usage`, {}, 60_000).then((got) => {
      done = true;
      return { status: got.status, body: got.body, ms: Date.now() - started };
    });
    // Liveness probes (Kubernetes' default timeout is 1 s), one after the other while it is
    // read: one is always in flight, so a stretch that holds the loop is always measured (with
    // a pause between probes, a stretch that began in the pause went unseen).
    let slowest = 0;
    let probes = 0;
    while (!done && Date.now() - started < 60_000) {
      const sent = Date.now();
      const probe = await answer(`${server.url}/healthz`, {}, 60_000);
      expect(probe.status).toBe(200);
      slowest = Math.max(slowest, Date.now() - sent);
      probes += 1;
    }
    const got = await usage;
    console.log(
      `[rev13-usage-bound] /v1/usage ${got.status} in ${got.ms} ms; ${probes} /healthz meanwhile, the slowest ${slowest} ms`,
    );
    expect(got.status).toBe(200);
    // The read takes a hundred HSCAN steps of 5,000 bills: probes went on throughout it.
    expect(probes).toBeGreaterThanOrEqual(3);
    expect(slowest).toBeLessThan(got.ms / 4);
    // Every bill counted once; the most recent 1,000 listed, oldest first.
    const json = JSON.parse(got.body) as {
      data: { message_id: string }[];
      has_more: boolean;
      totals: { messages: number; total_tokens: number };
    };
    expect(json.totals).toMatchObject({ messages: BILLS, total_tokens: 40 * BILLS });
    expect(json.data).toHaveLength(1_000);
    expect(json.has_more).toBe(true);
    expect(json.data.at(-1)?.message_id).toBe(`msg_${(BILLS - 1).toString(16).padStart(32, '0')}`);
    expect(json.data[0]?.message_id).toBe(`msg_${(BILLS - 1_000).toString(16).padStart(32, '0')}`);
  }, 90_000);
});
