/**
 * The two Redis deployments every test runs against: the standalone server at REDIS_URL
 * and the 3-primary Cluster started by global-setup.ts. Each target gives a client for the
 * store, a second client for raw reads, cleanup by key prefix and a command counter.
 */
import { randomBytes } from 'node:crypto';
import type { RecordStatus, StoredRecord } from '@idem/core';
import { Cluster, Redis } from 'ioredis';
import { inject } from 'vitest';
import { recommendedRedisClusterOptions, recommendedRedisOptions } from '../src/index.js';

export const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

export type Client = Redis | Cluster;

export interface Target {
  name: 'standalone' | 'cluster';
  /** A fresh client for a store under test. */
  connect(): Promise<Client>;
}

/**
 * Bounds of every client the tests build: the recommended options (reconnect for the life of
 * the process, calls refused while disconnected, a command timeout), with a timeout roomy
 * enough for a loaded machine.
 */
export const TEST_CLIENT_BOUNDS = { commandTimeoutMs: 5_000 };

async function ready(client: Client, what: string): Promise<Client> {
  try {
    // The offline queue is off: connect first, then talk.
    await client.connect();
    await client.ping();
    return client;
  } catch (error) {
    client.disconnect();
    throw new Error(
      `${what} is not reachable (${String(error)}). Start Redis (bash scripts/bootstrap.sh --services ` +
        'or redis-server) or point REDIS_URL at one.',
    );
  }
}

export const standalone: Target = {
  name: 'standalone',
  connect: () =>
    ready(
      new Redis(REDIS_URL, { ...recommendedRedisOptions(TEST_CLIENT_BOUNDS), lazyConnect: true }),
      `Redis at ${REDIS_URL}`,
    ),
};

export const clusterPorts: number[] | null = inject('clusterPorts');
export const clusterSkipReason: string = inject('clusterSkipReason');

export const cluster: Target = {
  name: 'cluster',
  connect: () => {
    if (!clusterPorts) throw new Error(clusterSkipReason);
    const client = new Cluster(
      clusterPorts.map((port) => ({ host: '127.0.0.1', port })),
      { ...recommendedRedisClusterOptions(TEST_CLIENT_BOUNDS), lazyConnect: true },
    );
    return ready(client, `Redis Cluster on ${clusterPorts.join(', ')}`);
  },
};

/** A client of the server on 127.0.0.1:`port` with the test bounds, connected. */
export async function connectPort(port: number): Promise<Redis> {
  const client = new Redis({
    host: '127.0.0.1',
    port,
    ...recommendedRedisOptions(TEST_CLIENT_BOUNDS),
    lazyConnect: true,
  });
  await client.connect();
  return client;
}

/** A fresh random key prefix (no hash tag, so a Cluster spreads the keys over its shards). */
export function randomPrefix(): string {
  return `idem-test:${randomBytes(6).toString('hex')}:`;
}

/** Deletes every key under `prefix`, on every primary of a Cluster. */
export async function deletePrefix(client: Client, prefix: string): Promise<number> {
  const nodes = client instanceof Cluster ? client.nodes('master') : [client];
  let deleted = 0;
  for (const node of nodes) {
    let cursor = '0';
    do {
      const [next, keys] = await node.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
      cursor = next;
      // Keys found on a node live in that node's slots: deleting them there is safe.
      for (const key of keys) deleted += await node.del(key);
    } while (cursor !== '0');
  }
  return deleted;
}

/**
 * Reads a record straight from Redis with a plain GET, decoding the bytes by the documented
 * layout (scripts.ts) independently of the adapter's own Lua read path and decoder. The
 * origin is a format-2 record's origin section, a format-1 record's owner ({@link rawFormat}
 * tells the two apart).
 */
export async function rawRecord(
  client: Client,
  redisKey: string,
): Promise<StoredRecord | undefined> {
  const bytes = await client.getBuffer(redisKey);
  if (!bytes) return undefined;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const format = view.getUint8(0);
  if (format !== 1 && format !== 2) throw new Error(`raw record ${redisKey} has format ${format}`);
  const statuses = [undefined, 'in_progress', 'completed', 'released'] as const;
  const status = statuses[view.getUint8(1)];
  if (!status) throw new Error(`raw record ${redisKey} has status ${bytes[1]}`);
  const owner = 42 + view.getUint32(34);
  const fingerprint = owner + view.getUint32(38);
  const record: StoredRecord = {
    status: status as RecordStatus,
    fingerprint: bytes.subarray(owner, fingerprint).toString('utf8'),
    owner: bytes.subarray(42, owner).toString('utf8'),
    fence: view.getFloat64(2),
    origin: bytes.subarray(42, owner).toString('utf8'),
    leaseUntil: view.getFloat64(10),
    expiresAt: view.getFloat64(18),
  };
  let end = fingerprint;
  if (format === 2) {
    end = fingerprint + 4 + view.getUint32(fingerprint);
    record.origin = bytes.subarray(fingerprint + 4, end).toString('utf8');
  }
  if (end < bytes.length || status === 'completed') {
    record.outcome = new Uint8Array(bytes.subarray(end));
  }
  return record;
}

/** The format byte of the record at `redisKey` (1: its origin is its owner; 2: an origin section), or undefined. */
export async function rawFormat(client: Client, redisKey: string): Promise<number | undefined> {
  const bytes = await client.getBuffer(redisKey);
  return bytes ? bytes[0] : undefined;
}

/** Waits (at most `limitMs`, polling) until Redis no longer has `redisKey`. */
export async function untilGone(client: Client, redisKey: string, limitMs = 5_000): Promise<void> {
  const started = performance.now();
  while ((await client.exists(redisKey)) === 1) {
    if (performance.now() - started > limitMs) throw new Error(`${redisKey} still there`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** Rewrites the retention deadline in a record's header (as if Redis had not freed it yet). */
export async function setRawExpiresAt(
  client: Client,
  redisKey: string,
  expiresAt: number,
): Promise<void> {
  const field = Buffer.alloc(8);
  field.writeDoubleBE(expiresAt);
  await client.setrange(redisKey, 18, field);
}

/** Redis's own clock, epoch ms. */
export async function redisNow(client: Client): Promise<number> {
  const [seconds, micros] = await client.time();
  return Number(seconds) * 1000 + Math.floor(Number(micros) / 1000);
}

/**
 * The first epoch ms at which Redis no longer has the key (it drops a key once
 * now > PEXPIRETIME), or a negative PEXPIRETIME answer: -1 no expiry, -2 no key.
 */
export async function keyGoneAt(client: Client, redisKey: string): Promise<number> {
  const at = Number(await client.call('PEXPIRETIME', redisKey));
  return at < 0 ? at : at + 1;
}

/** Counts the commands a client sends (one per round trip for single commands). */
export function countCommands(client: Client): {
  readonly count: number;
  names: string[];
  reset(): void;
} {
  const names: string[] = [];
  const original = client.sendCommand.bind(client) as (...args: unknown[]) => unknown;
  (client as unknown as { sendCommand: (...args: unknown[]) => unknown }).sendCommand = (
    ...args: unknown[]
  ) => {
    names.push(String((args[0] as { name: string }).name));
    return original(...args);
  };
  return {
    get count() {
      return names.length;
    },
    names,
    reset() {
      names.length = 0;
    },
  };
}

/** Both targets; see {@link skipTarget}. */
export const targets: Target[] = [standalone, cluster];

/** True (after saying why) for the Cluster when redis-server is not installed. */
export function skipTarget(target: Target): boolean {
  if (target.name === 'cluster' && !clusterPorts) {
    console.warn(`[store-redis] ${clusterSkipReason}`);
    return true;
  }
  return false;
}
