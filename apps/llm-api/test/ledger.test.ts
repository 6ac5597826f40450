import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createMemoryLedger,
  createRedisLedger,
  type Ledger,
  type LedgerEntry,
  openBackend,
  StaleFenceError,
} from '../src/index.js';
import { connectRedis, deletePrefix, randomPrefix } from './redis.js';

const entry = (messageId: string, fence: number, totalTokens = 10): LedgerEntry => ({
  messageId,
  model: 'local-1',
  promptTokens: 3,
  completionTokens: totalTokens - 3,
  totalTokens,
  fence,
  billedAt: Date.now(),
});

let redis: Redis;
const prefixes: string[] = [];
beforeAll(async () => {
  redis = await connectRedis();
});
afterAll(async () => {
  for (const prefix of prefixes) await deletePrefix(redis, prefix);
  redis?.disconnect();
});

const targets: [string, () => { ledger: Ledger; prefix?: string }][] = [
  ['memory', () => ({ ledger: createMemoryLedger() })],
  [
    'redis',
    () => {
      const prefix = randomPrefix();
      prefixes.push(prefix);
      return { ledger: createRedisLedger(redis, prefix), prefix };
    },
  ],
];

describe.each(targets)('%s ledger', (name, make) => {
  it('bills a message once; the same fence again changes nothing', async () => {
    const { ledger } = make();
    expect(await ledger.bill(entry('msg_a', 1, 10))).toBe('billed');
    expect(await ledger.bill(entry('msg_a', 1, 99))).toBe('duplicate');
    const rows = await ledger.entries();
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ messageId: 'msg_a', totalTokens: 10, fence: 1 });
  });

  it('lets a higher fence replace the bill and refuses a stale one', async () => {
    const { ledger } = make();
    await ledger.bill(entry('msg_b', 1, 10));
    expect(await ledger.bill(entry('msg_b', 3, 12))).toBe('replaced');
    await expect(ledger.bill(entry('msg_b', 2, 50))).rejects.toBeInstanceOf(StaleFenceError);
    const rows = await ledger.entries();
    expect(rows).toEqual([
      expect.objectContaining({ messageId: 'msg_b', totalTokens: 12, fence: 3 }),
    ]);
  });

  it('keeps one entry per message id under concurrent bills', async () => {
    const { ledger } = make();
    const results = await Promise.allSettled(
      Array.from({ length: 10 }, (_, i) => ledger.bill(entry('msg_c', 1 + (i % 3), 10 + i))),
    );
    expect(results.some((r) => r.status === 'fulfilled')).toBe(true);
    const rows = await ledger.entries();
    expect(rows).toHaveLength(1);
    expect(rows[0]?.fence).toBe(3);
  });

  it('counts model executions', async () => {
    const { ledger } = make();
    await ledger.count('model_started');
    await ledger.count('model_started');
    await ledger.count('model_completed');
    expect(await ledger.stats()).toEqual({ model_started: 2, model_completed: 1, model_failed: 0 });
  });

  if (name === 'redis') {
    it('persists in Redis: a second ledger on the same prefix sees the bills (raw hash too)', async () => {
      const { ledger, prefix } = make();
      await ledger.bill(entry('msg_d', 4, 21));
      const raw = await redis.hget(`${prefix}ledger`, 'msg_d');
      expect(JSON.parse(raw ?? 'null')).toMatchObject({ fence: 4, totalTokens: 21 });
      const again = createRedisLedger(redis, prefix as string);
      expect(await again.entries()).toEqual(await ledger.entries());
    });
  }
});

describe('the memory ledger (the default store) is bounded', () => {
  it('keeps at most IDEM_MEMORY_MAX_ENTRIES bills, the most recent, however many keys come', async () => {
    const backend = await openBackend({ kind: 'memory', maxEntries: 3 }, 'test:');
    for (let i = 1; i <= 5; i += 1) await backend.ledger.bill(entry(`msg_${i}`, 1));
    // A bill replaced by a takeover counts as recent.
    expect(await backend.ledger.bill(entry('msg_3', 2))).toBe('replaced');
    const ids = (await backend.ledger.entries()).map((e) => e.messageId).sort();
    expect(ids).toEqual(['msg_3', 'msg_4', 'msg_5']);
    await backend.close();
  });
});
