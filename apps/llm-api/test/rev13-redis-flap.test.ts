import { generateKey } from '@idem/core';
import { describe, expect, it } from 'vitest';
import { answer, firstSuccess } from './answers.js';
import { useAppBehindProxy } from './fault-harness.js';
import { BOUND_MS, STORE_TIMEOUT_MS, sleep } from './fault-stack.js';
import { startOwnRedis } from './own-redis.js';
import { randomPrefix } from './redis.js';

/**
 * The app on a redis-server of the test's own behind a TCP proxy of its own that flaps:
 * silent, reset and passing in turn every few hundred ms, with keyed requests (streamed and
 * not) in flight and retried with their keys throughout.
 */
describe('rev13: the app on Redis behind a flapping network', () => {
  const app = useAppBehindProxy({
    startStore: async () => {
      const redis = await startOwnRedis([
        '--appendonly',
        'yes',
        '--appendfsync',
        'always',
        '--save',
        '',
      ]);
      return { target: `http://127.0.0.1:${redis.port}`, stop: () => redis.stop() };
    },
    env: (proxy) => ({
      REDIS_URL: `redis://127.0.0.1:${proxy.port}`,
      IDEM_KEY_PREFIX: randomPrefix(),
      MODEL_CHUNK_DELAY_MS: '20',
    }),
    hookTimeoutMs: 30_000,
  });

  it('answers every request in bound, never 500; each key runs its model once; service returns', async () => {
    const { proxy, server } = app();
    expect((await firstSuccess(server.url, 30, 100, BOUND_MS, Date.now())).recovered).toBe(true);
    // The usage ledger's read, again while it answers 503 (+ Retry-After, the app's answer to
    // a store it cannot reach): a loaded CI lane once got one right after the network healed,
    // and parsed the problem body as usage.
    const usageNow = async () => {
      for (let i = 0; ; i++) {
        const got = await answer(`${server.url}/v1/usage`, {}, BOUND_MS);
        if (got.status === 503 && i < 50) {
          await sleep(200);
          continue;
        }
        expect(got.status, got.body).toBe(200);
        return JSON.parse(got.body);
      }
    };
    const usage0 = await usageNow();
    const keys = Array.from({ length: 6 }, (_, i) => ({
      key: generateKey(),
      stream: i % 2 === 0,
      prompt: `[slow:120] flap ${i} ${generateKey().slice(0, 8)}`,
    }));
    const send = (k: (typeof keys)[number]) =>
      answer(
        `${server.url}/${k.stream ? 'v1/chat/completions' : 'api/messages'}`,
        {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'idempotency-key': k.key },
          body: k.stream
            ? JSON.stringify({
                model: 'local-1',
                stream: true,
                messages: [{ role: 'user', content: k.prompt }],
              })
            : JSON.stringify({ prompt: k.prompt, model: 'local-1' }),
        },
        3_000 + 3 * STORE_TIMEOUT_MS + 2_000,
      ).catch((error: unknown) => ({
        status: -1,
        body: String(error),
        retryAfter: null,
        contentType: null,
      }));
    const statuses: number[] = [];
    const flapping = (async () => {
      const modes = ['silent', 'pass', 'down', 'pass'] as const;
      for (let i = 0; i < 16; i++) {
        proxy.set(modes[i % modes.length] as 'silent' | 'pass' | 'down');
        await sleep(250 + (i % 3) * 100);
      }
      proxy.set('pass');
    })();
    const traffic = (async () => {
      for (let round = 0; round < 8; round++) {
        const got = await Promise.all(keys.map(send));
        for (const g of got) statuses.push(g.status);
        await sleep(150);
      }
    })();
    await Promise.all([flapping, traffic]);
    proxy.set('pass');
    // Every key to its final answer.
    const finals = [];
    for (const k of keys) {
      let got = await send(k);
      for (let i = 0; i < 60 && got.status !== 200 && got.status !== 201; i++) {
        statuses.push(got.status);
        await sleep(200);
        got = await send(k);
      }
      finals.push(got);
    }
    const usage1 = await usageNow();
    const counts: Record<string, number> = {};
    for (const s of statuses) counts[s] = (counts[s] ?? 0) + 1;
    console.log(
      `[rev13-redis-flap] statuses ${JSON.stringify(counts)}; model runs ${usage1.model_executions.started - usage0.model_executions.started} (failed ${usage1.model_executions.failed - usage0.model_executions.failed}); bills ${usage1.totals.messages - usage0.totals.messages}`,
    );
    expect(statuses.filter((s) => s === -1 || (s >= 500 && s !== 503))).toEqual([]);
    expect(finals.map((f) => f.status)).toEqual(keys.map((k) => (k.stream ? 200 : 201)));
    expect(usage1.totals.messages - usage0.totals.messages).toBe(keys.length);
    const ids = new Set(usage1.data.map((e: { message_id: string }) => e.message_id));
    for (const f of finals) {
      const id = f.body.startsWith('{')
        ? JSON.parse(f.body).id
        : /"id":"([^"]+)"/.exec(f.body)?.[1];
      expect(ids.has(id)).toBe(true);
    }
  }, 60_000);
});
