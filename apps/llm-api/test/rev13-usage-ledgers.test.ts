import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Backend, openBackend } from '../src/backend.js';
import { parseConfig } from '../src/config.js';
import {
  createMemoryLedger,
  createRedisLedger,
  type Ledger,
  type LedgerEntry,
} from '../src/index.js';
import { type RunningServer, startServer } from '../src/server.js';
import { deleteDemoRows } from '../src/stores/postgres-cleanup.js';
import { connectRedis, deletePrefix, randomPrefix } from './redis.js';

const DATABASE_URL = process.env.DATABASE_URL?.trim() || 'postgres://postgres@127.0.0.1:5432/test';

const entry = (id: number, fence: number, totalTokens: number): LedgerEntry => ({
  messageId: `msg_${id.toString(16).padStart(32, '0')}`,
  model: 'local-1',
  promptTokens: 3,
  completionTokens: totalTokens - 3,
  totalTokens,
  fence,
  billedAt: 1_764_900_000_000 + id * 1_000 + fence,
});

let redis: Redis;
let postgres: Backend;
const redisPrefixes: string[] = [];
const pgPrefix = `llm-test:${randomBytes(4).toString('hex')}:`;
beforeAll(async () => {
  redis = await connectRedis();
  postgres = await openBackend({ kind: 'postgres', url: DATABASE_URL }, pgPrefix, {
    timeoutMs: 2_000,
  });
});
afterAll(async () => {
  for (const prefix of redisPrefixes) await deletePrefix(redis, prefix);
  redis?.disconnect();
  await deleteDemoRows(DATABASE_URL, pgPrefix).catch(() => undefined);
  await postgres?.close();
});

const targets: [string, () => Ledger][] = [
  ['memory', () => createMemoryLedger()],
  [
    'redis',
    () => {
      const prefix = randomPrefix();
      redisPrefixes.push(prefix);
      return createRedisLedger(redis, prefix);
    },
  ],
  // Fence 0: written at once (a keyed bill is staged for its completion's transaction).
  ['postgres', () => postgres.ledger],
];

describe.each(targets)('rev13: ledger usage (%s)', (name, make) => {
  it('sums every bill once (a replaced one too) and lists only the most recent, oldest first', async () => {
    const ledger = make();
    const fence = name === 'postgres' ? 0 : 1;
    for (let id = 1; id <= 5; id++) await ledger.bill(entry(id, fence, 10 * id));
    // A takeover's bill replaces message 2's (postgres: keyless bills are never replaced).
    if (name !== 'postgres') await ledger.bill(entry(2, 2, 100));
    const usage = await (ledger.usage as NonNullable<Ledger['usage']>)(3);
    const expectedTotal = name === 'postgres' ? 150 : 10 + 100 + 30 + 40 + 50;
    expect(usage.totals).toEqual({
      messages: 5,
      prompt_tokens: 15,
      completion_tokens: expectedTotal - 15,
      total_tokens: expectedTotal,
    });
    expect(usage.recent.map((e) => e.messageId)).toEqual(
      [3, 4, 5].map((id) => `msg_${id.toString(16).padStart(32, '0')}`),
    );
    const whole = await ledger.usage?.(100);
    expect(whole?.recent.map((e) => e.billedAt)).toEqual(
      (await ledger.entries()).map((e) => e.billedAt),
    );
  });
});

describe('rev13: GET /v1/usage ?limit', () => {
  let server: RunningServer;
  beforeAll(async () => {
    server = await startServer(
      parseConfig({ PORT: '0', MODEL_CHUNK_DELAY_MS: '1', IDEM_OTEL: 'off' }),
    );
  });
  afterAll(async () => {
    await server?.close();
  });

  it.each(['0', '-1', '1.5', 'abc', '', '10001'])('refuses limit=%j with 400', async (limit) => {
    const response = await fetch(`${server.url}/v1/usage?limit=${limit}`);
    expect(response.status).toBe(400);
    expect(((await response.json()) as { error: { type: string } }).error.type).toBe(
      'invalid_request_error',
    );
  });

  it('lists at most limit bills, with has_more', async () => {
    for (let i = 0; i < 3; i++) {
      const response = await fetch(`${server.url}/api/messages`, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'idempotency-key': `k${i}-${randomBytes(4).toString('hex')}`,
        },
        body: JSON.stringify({ prompt: `usage ${i}`, model: 'local-1' }),
      });
      expect(response.status).toBe(201);
    }
    const two = (await (await fetch(`${server.url}/v1/usage?limit=2`)).json()) as {
      data: unknown[];
      has_more: boolean;
      totals: { messages: number };
    };
    expect(two).toMatchObject({ has_more: true, totals: { messages: 3 } });
    expect(two.data).toHaveLength(2);
    const all = (await (await fetch(`${server.url}/v1/usage`)).json()) as {
      data: unknown[];
      has_more: boolean;
    };
    expect(all.data).toHaveLength(3);
    expect(all.has_more).toBe(false);
  });
});
