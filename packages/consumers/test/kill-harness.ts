import { type ChildProcess, fork } from 'node:child_process';
import { createRequire } from 'node:module';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { createFencedLedger, type LedgerStats, REDIS_URL } from '@idem/test-ledger';
import { Redis } from 'ioredis';
import { expect } from 'vitest';
import { uniqueName } from './brokers.js';
import type { ChildConfig, ChildEvent } from './consumer-child.js';

/** The broker side of the scenario. */
export interface BrokerUnderTest {
  /** Where the children consume (queue, or stream and durable). */
  target: Pick<ChildConfig, 'broker' | 'queue' | 'durable'>;
  publish(ids: string[]): Promise<void>;
  /** Messages never acked, once no consumer is connected. */
  leftover(): Promise<number>;
}

/** What the scenario saw. */
export interface KillSummary {
  published: number;
  ledgerEntries: number;
  ledger: LedgerStats;
  handlerRuns: number;
  /** Ids whose handler started more than once (each was killed mid-message once). */
  rerun: string[];
  statuses: Record<string, number>;
  killedInHandler: string;
  killedBeforeAck: string;
  /** Statuses the message killed after its outcome was recorded got afterwards. */
  afterBeforeAckKill: string[];
  leftover: number;
}

interface Child {
  process: ChildProcess;
  events: ChildEvent[];
  exited: Promise<void>;
}

const loader = pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href;
const entry = fileURLToPath(new URL('./consumer-child.ts', import.meta.url));

async function spawnChild(config: ChildConfig, all: ChildEvent[]): Promise<Child> {
  const child = fork(entry, [JSON.stringify(config)], {
    execArgv: ['--import', loader],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const events: ChildEvent[] = [];
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const ready = new Promise<void>((resolve, reject) => {
    child.on('message', (event: ChildEvent) => {
      if (event.type === 'ready') return resolve();
      events.push(event);
      all.push(event);
    });
    child.once('exit', (code, signal) =>
      reject(new Error(`consumer child exited (${signal ?? code}) before it was ready`)),
    );
  });
  await within(ready, 30_000, 'the consumer child to start');
  return { process: child, events, exited };
}

async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)),
          ms,
        );
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

async function until(check: () => boolean | Promise<boolean>, ms: number, what: string) {
  const deadline = performance.now() + ms;
  while (!(await check())) {
    if (performance.now() > deadline)
      throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(50);
  }
}

/**
 * N messages in; consumer A is SIGKILLed while its k-th handler runs (before its side
 * effect), consumer B kills itself after its k-th outcome is recorded and before the ack;
 * consumers C and D then drain the queue side by side. Every side effect is a write to a
 * fenced ledger.
 */
export async function killAndRedeliver(broker: BrokerUnderTest, n: number): Promise<KillSummary> {
  const prefix = `${uniqueName('idem-consumers')}:`;
  const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 2 });
  const ledger = createFencedLedger(redis, `${prefix}ledger:`);
  const all: ChildEvent[] = [];
  const children: Child[] = [];
  const base = { ...broker.target, prefix, leaseMs: 1_500, workMs: 10 };
  const k = Math.max(2, Math.floor(n / 5));
  try {
    const ids = Array.from({ length: n }, (_, i) => `m-${i}`);
    await broker.publish(ids);

    const a = await spawnChild({ ...base, prefetch: 1, kill: { mode: 'handler', at: k } }, all);
    children.push(a);
    await until(
      () => a.events.some((e) => e.type === 'start' && e.n === k),
      30_000,
      `A's ${k}th message`,
    );
    a.process.kill('SIGKILL');
    await a.exited;
    const killedInHandler = (
      a.events.find((e) => e.type === 'start' && e.n === k) as { id: string }
    ).id;

    const b = await spawnChild({ ...base, prefetch: 1, kill: { mode: 'before-ack', at: k } }, all);
    children.push(b);
    await within(b.exited, 30_000, 'B to kill itself before an ack');
    const recordedByB = b.events.filter((e) => e.type === 'report' && e.status === 'processed');
    const killedBeforeAck = (recordedByB[k - 1] as { id: string }).id;

    const drainers = await Promise.all([
      spawnChild({ ...base, prefetch: 4 }, all),
      spawnChild({ ...base, prefetch: 4 }, all),
    ]);
    children.push(...drainers);
    const drainerReports = () =>
      drainers.flatMap((c) => c.events).filter((e) => e.type === 'report') as {
        id: string;
        status: string;
      }[];
    await until(
      async () => {
        const last = new Map<string, string>();
        for (const e of all) if (e.type === 'report') last.set(e.id, e.status);
        const acked = ids.every((id) => ['processed', 'replayed'].includes(last.get(id) ?? ''));
        const replayedAfterKill = drainerReports().some(
          (e) => e.id === killedBeforeAck && e.status === 'replayed',
        );
        return acked && replayedAfterKill && (await ledger.entries()).size === n;
      },
      45_000,
      'every message to be recorded and acked',
    );
    for (const child of drainers) child.process.disconnect();
    await within(Promise.all(drainers.map((c) => c.exited)), 15_000, 'the consumers to stop');

    const starts = new Map<string, number>();
    for (const e of all) if (e.type === 'start') starts.set(e.id, (starts.get(e.id) ?? 0) + 1);
    const statuses: Record<string, number> = {};
    for (const e of all)
      if (e.type === 'report') statuses[e.status] = (statuses[e.status] ?? 0) + 1;
    return {
      published: n,
      ledgerEntries: (await ledger.entries()).size,
      ledger: await ledger.stats(),
      handlerRuns: [...starts.values()].reduce((x, y) => x + y, 0),
      rerun: [...starts].filter(([, count]) => count > 1).map(([id]) => id),
      statuses,
      killedInHandler,
      killedBeforeAck,
      afterBeforeAckKill: drainerReports()
        .filter((e) => e.id === killedBeforeAck)
        .map((e) => e.status),
      leftover: await broker.leftover(),
    };
  } finally {
    for (const child of children)
      if (child.process.exitCode === null) child.process.kill('SIGKILL');
    await ledger.drop().catch(() => {});
    const keys = await redis.keys(`${prefix}*`).catch(() => [] as string[]);
    if (keys.length > 0) await redis.del(...keys).catch(() => {});
    redis.disconnect();
  }
}

/** N side effects, none twice, none lost; the killed message ran again, the unacked one replayed. */
export function expectExactlyOnce(summary: KillSummary, n: number): void {
  expect(summary.ledgerEntries).toBe(n);
  // Every side effect committed once: no stale or repeated write reached the ledger.
  expect(summary.ledger).toEqual({ written: n, replaced: 0, stale: 0 });
  // One message ran twice: the one whose consumer was killed before its side effect.
  expect(summary.rerun).toEqual([summary.killedInHandler]);
  expect(summary.handlerRuns).toBe(n + 1);
  // The message recorded but never acked came back and was acked without running.
  expect(summary.afterBeforeAckKill).toContain('replayed');
  expect(summary.afterBeforeAckKill).not.toContain('processed');
  expect(summary.leftover).toBe(0);
}
