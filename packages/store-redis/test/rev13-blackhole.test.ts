/**
 * rev13 adversarial review: a path that goes silent (every connection open, nothing
 * forwarded, new connections accepted and silent too), then heals for new connections only
 * (the old ones stay silent for ever, as behind a NAT that lost its state). Calls must stay
 * bounded during it, and the store must come back by itself after it.
 */
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createServer, type Socket, connect as tcpConnect } from 'node:net';
import { createIdempotency } from '@idem/core';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { createRedisStore, recommendedRedisOptions } from '../src/index.js';
import { type Outcome, timed } from './batchrev-timed.js';
import {
  type RedisServer,
  redisBinariesAvailable,
  startRedisServer,
  stopRedisServer,
} from './redis-servers.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

interface SilentProxy {
  port: number;
  /** From now on nothing is forwarded on any connection, old or new. */
  silence(): void;
  /** New connections forward again; those that went silent stay silent. */
  heal(): void;
  close(): Promise<void>;
}

async function startSilentProxy(upstreamPort: number): Promise<SilentProxy> {
  let epoch = 0;
  let silent = false;
  const sockets = new Set<Socket>();
  const track = (s: Socket) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
    s.on('error', () => s.destroy());
  };
  const server = createServer((client) => {
    track(client);
    const born = epoch;
    const dead = () => silent || born < epoch;
    const up = tcpConnect({ host: '127.0.0.1', port: upstreamPort });
    track(up);
    let mine = epoch;
    client.on('data', (chunk) => {
      if (!dead() && mine === born) up.write(chunk);
      else mine = -1; // once silent, silent for ever
    });
    up.on('data', (chunk) => {
      if (!dead() && mine === born) client.write(chunk);
      else mine = -1;
    });
    client.once('close', () => up.destroy());
    up.once('close', () => client.destroy());
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const address = server.address();
  if (!address || typeof address === 'string') throw new Error('no port');
  return {
    port: address.port,
    silence() {
      silent = true;
      epoch++;
    },
    heal() {
      silent = false;
      epoch++;
    },
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

// Throws (fails the file) when redis-server or redis-cli is missing: these tests never skip.
redisBinariesAvailable();
let server: RedisServer | undefined;
let proxy: SilentProxy | undefined;
const opened: Redis[] = [];
afterAll(async () => {
  for (const c of opened) c.disconnect();
  await proxy?.close();
  if (server) await stopRedisServer(server);
});

describe('rev13: silent path, then healed for new connections', () => {
  it('lease lapse on a silent path, takeover by a second engine, late completion: the first is aborted before the second starts, never overwrites it, every replay is the second outcome', {
    timeout: 30_000,
  }, async () => {
    const redis = await startRedisServer();
    const path = await startSilentProxy(redis.port);
    const viaProxy = new Redis({
      host: '127.0.0.1',
      port: path.port,
      ...recommendedRedisOptions({ commandTimeoutMs: 400, maxReconnectDelayMs: 200 }),
      lazyConnect: true,
    });
    const direct = new Redis({
      host: '127.0.0.1',
      port: redis.port,
      ...recommendedRedisOptions({ commandTimeoutMs: 400, maxReconnectDelayMs: 200 }),
      lazyConnect: true,
    });
    for (const c of [viaProxy, direct]) {
      c.on('error', () => {});
      opened.push(c);
      await c.connect();
    }
    try {
      const prefix = `r13l:${randomBytes(3).toString('hex')}:`;
      const settings = { leaseMs: 1_500, heartbeatMs: 500, storeTimeoutMs: 1_000 };
      const a = createIdempotency<string>({
        store: createRedisStore({ client: viaProxy, keyPrefix: prefix }),
        ...settings,
      });
      const b = createIdempotency<string>({
        store: createRedisStore({ client: direct, keyPrefix: prefix }),
        ...settings,
      });
      const t0 = performance.now();
      let abortedA = -1;
      let startedB = -1;
      const fences: number[] = [];
      const first = a
        .execute({ key: 'K', scope: 's' }, async (ctx) => {
          fences.push(ctx.fence);
          ctx.signal.addEventListener('abort', () => {
            abortedA = performance.now() - t0;
          });
          await sleep(3_500); // ignores its signal: the worst case
          return 'A';
        })
        .then(
          (r) => ({ ok: true as const, value: r.value }),
          (e: unknown) => ({ ok: false as const, code: (e as { code?: string }).code }),
        );
      await sleep(300);
      path.silence();
      let second: { value: string; replayed: boolean } | undefined;
      const pollUntil = performance.now() + 6_000;
      while (!second && performance.now() < pollUntil) {
        try {
          second = await b.execute({ key: 'K', scope: 's' }, async (ctx) => {
            startedB = performance.now() - t0;
            fences.push(ctx.fence);
            return 'B';
          });
        } catch {
          await sleep(100);
        }
      }
      path.heal();
      const resultA = await first;
      await sleep(1_500); // A's completion retries on the healed path
      const replayA = await a
        .execute({ key: 'K', scope: 's' }, async () => 'again')
        .catch((e: unknown) => e);
      const replayB = await b.execute({ key: 'K', scope: 's' }, async () => 'again');
      console.log(
        `[rev13 lapse] abortedA=${Math.round(abortedA)} startedB=${Math.round(startedB)} fences=${fences} resultA=${JSON.stringify(resultA)} ` +
          `second=${JSON.stringify(second)} replayA=${JSON.stringify(replayA)} replayB=${JSON.stringify(replayB)}`,
      );
      expect(second?.value).toBe('B');
      expect(abortedA).toBeGreaterThanOrEqual(0);
      expect(abortedA).toBeLessThanOrEqual(startedB);
      expect(fences[1]).toBeGreaterThan(fences[0] as number);
      expect(resultA.ok).toBe(false);
      expect(replayB).toMatchObject({ value: 'B', replayed: true });
      expect(replayA).toMatchObject({ value: 'B', replayed: true });
    } finally {
      await path.close();
      await stopRedisServer(redis);
    }
  });

  it('execute() stays bounded while silent; after the heal the next calls succeed without a restart', {
    timeout: 30_000,
  }, async () => {
    server = await startRedisServer();
    proxy = await startSilentProxy(server.port);
    const client = new Redis({
      host: '127.0.0.1',
      port: proxy.port,
      ...recommendedRedisOptions({ commandTimeoutMs: 1_000, maxReconnectDelayMs: 300 }),
      lazyConnect: true,
    });
    client.on('error', () => {});
    opened.push(client);
    await client.connect();
    const store = createRedisStore({
      client,
      keyPrefix: `r13b:${randomBytes(3).toString('hex')}:`,
    });
    const idem = createIdempotency<string>({ store, storeTimeoutMs: 2_500 });
    const runs = new Map<string, number>();
    const run = (key: string) =>
      timed(key, 15_000, () =>
        idem.execute({ key, scope: 's' }, async () => {
          runs.set(key, (runs.get(key) ?? 0) + 1);
          await sleep(50);
          return `v-${key}`;
        }),
      );
    expect((await run('warm')).ok).toBe(true);
    const inFlight = Promise.all(Array.from({ length: 20 }, (_, i) => run(`a${i}`)));
    await sleep(10);
    proxy.silence();
    const during: Outcome[] = [];
    const until = performance.now() + 6_000;
    while (performance.now() < until) {
      during.push(...(await Promise.all(Array.from({ length: 5 }, (_, i) => run(`d${i}`)))));
      await sleep(200);
    }
    proxy.heal();
    const healedAt = performance.now();
    let firstOkMs = -1;
    const after: Outcome[] = [];
    while (performance.now() - healedAt < 10_000) {
      const o = await run(`h${after.length}`);
      after.push(o);
      if (o.ok) {
        firstOkMs = performance.now() - healedAt;
        break;
      }
      await sleep(100);
    }
    const first = await inFlight;
    const all = [...first, ...during, ...after];
    const twice = [...runs.entries()].filter(([, n]) => n > 1);
    console.log(
      `[rev13 silent] during=${during.length} maxMs=${Math.max(...all.map((o) => o.ms))} firstOkAfterHealMs=${Math.round(firstOkMs)} ` +
        `errors=${JSON.stringify([...new Set(all.filter((o) => !o.ok).map((o) => o.error))])} twice=${twice.length} status=${client.status}`,
    );
    expect(all.filter((o) => o.error === 'HUNG')).toEqual([]);
    expect(Math.max(...all.map((o) => o.ms))).toBeLessThan(2_500 + 1_500);
    expect(firstOkMs).toBeGreaterThanOrEqual(0);
    expect(firstOkMs).toBeLessThan(5_000);
    expect(twice).toEqual([]);
  });
});
