import { StoreUnavailableError } from '@idem/core';
import type { Cluster, Redis } from 'ioredis';

/** What a Redis server keeps on disk, as {@link describeRedisDurability} found it. */
export interface RedisDurability {
  /** Append-only file on (`appendonly yes`); `'unknown'` when it could not be read. */
  aof: boolean | 'unknown';
  /** `appendfsync` policy; `'unknown'` when it could not be read. */
  fsync: 'always' | 'everysec' | 'no' | 'unknown';
  /** RDB snapshot schedule (`save`, e.g. `'3600 1 300 100'`), `false` for none, or `'unknown'`. */
  rdb: string | false | 'unknown';
  /** What a crash or restart of the server loses of the writes it acknowledged, in words. */
  loses: string;
  /**
   * Set when a restart can lose acknowledged records (completed outcomes stop being replayed,
   * leases vanish, so retries execute again), when Redis may evict them under memory
   * pressure, or when the settings could not be read. Log it at start.
   */
  warning?: string;
  /** The node described (`host:port`); on a Cluster, the weakest primary. */
  node: string;
  /** `maxmemory` in bytes (`0`: no limit, nothing is ever evicted); `'unknown'` when it could not be read. */
  maxmemory: number | 'unknown';
  /** `maxmemory-policy` (e.g. `'noeviction'`, `'allkeys-lru'`); `'unknown'` when it could not be read. */
  evictionPolicy: string;
}

const FSYNC = new Set(['always', 'everysec', 'no']);

async function configGet(node: Redis, name: string): Promise<string | undefined> {
  const reply = (await node.call('CONFIG', 'GET', name)) as unknown;
  return Array.isArray(reply) && reply.length >= 2 ? String(reply[1]) : undefined;
}

/** One `field:value` line of an INFO section. */
const infoField = (info: string, field: string): string | undefined =>
  new RegExp(`^${field}:(.*?)\\r?$`, 'm').exec(info)?.[1];

type Eviction = Pick<RedisDurability, 'maxmemory' | 'evictionPolicy'>;

function eviction(maxmemory: string | undefined, policy: string | undefined): Eviction {
  const bytes = maxmemory === undefined ? Number.NaN : Number(maxmemory);
  return {
    maxmemory: Number.isSafeInteger(bytes) && bytes >= 0 ? bytes : 'unknown',
    evictionPolicy: policy?.trim() || 'unknown',
  };
}

/**
 * Says whether Redis may evict idem's keys. Every idem key carries an expiry, so the
 * `volatile-*` policies evict them as readily as `allkeys-*`: only `noeviction` (or no
 * `maxmemory`) keeps them.
 */
function evictionWarning({ maxmemory, evictionPolicy }: Eviction): string | undefined {
  if (maxmemory === 0 || evictionPolicy === 'noeviction') return undefined;
  if (maxmemory === 'unknown' || evictionPolicy === 'unknown')
    return 'Redis eviction settings could not be read (maxmemory, maxmemory-policy): check that the server runs with maxmemory-policy noeviction or without maxmemory, or it may evict idempotency records under memory pressure and their retries execute again.';
  return `Redis evicts keys under memory pressure (maxmemory ${maxmemory} bytes, maxmemory-policy ${evictionPolicy}): it can drop completed idempotency records and live leases long before their deadlines (every idem key has an expiry, so volatile-* policies evict them too), and the retries of those requests execute again. Use maxmemory-policy noeviction (a full Redis then refuses new records with a 503) or a Redis of its own without maxmemory.`;
}

/** Rank: lower is weaker. */
function assess(
  aof: RedisDurability['aof'],
  fsync: RedisDurability['fsync'],
  rdb: RedisDurability['rdb'],
): { rank: number; loses: string; warning?: string } {
  if (aof === true && fsync === 'always') return { rank: 5, loses: 'nothing it acknowledged' };
  if (aof === true && fsync === 'everysec')
    return { rank: 4, loses: 'up to about 1 s of acknowledged writes (a crash of the machine)' };
  if (aof === true && fsync === 'no')
    return {
      rank: 3,
      loses: 'the writes the OS had not flushed yet (typically up to 30 s)',
      warning:
        'Redis runs with appendfsync no: a crash of the machine can lose the last ~30 s of idempotency records, and the retries of those requests execute again. Use appendfsync everysec or always.',
    };
  if (aof === true)
    return {
      rank: 3,
      loses: 'unknown (fsync policy unreadable)',
      warning:
        'Redis has AOF on but its appendfsync policy could not be read (CONFIG GET not allowed): check that it is everysec or always.',
    };
  if (aof === 'unknown')
    return {
      rank: 1,
      loses: 'unknown',
      warning:
        'Redis persistence settings could not be read (CONFIG GET and INFO persistence failed): check that the server runs with AOF (appendonly yes), or a restart loses idempotency records and their retries execute again.',
    };
  if (rdb === 'unknown')
    return {
      rank: 1,
      loses: 'at least the records written since the last RDB snapshot, possibly every record',
      warning:
        'Redis runs without AOF (appendonly no) and its snapshot schedule could not be read (CONFIG GET not allowed): a restart loses idempotency records, and the retries of those requests execute again. Turn on AOF (appendonly yes, appendfsync everysec or always).',
    };
  if (rdb === false)
    return {
      rank: 0,
      loses: 'every record',
      warning:
        'Redis keeps nothing on disk (appendonly no, no save schedule): a restart loses every idempotency record, completed outcomes are no longer replayed and the retries of those requests execute again. Turn on AOF (appendonly yes, appendfsync everysec or always).',
    };
  return {
    rank: 2,
    loses: 'every record written since the last RDB snapshot (minutes)',
    warning: `Redis keeps only RDB snapshots (save "${rdb}"): a restart loses the idempotency records written since the last snapshot, and the retries of those requests execute again. Turn on AOF (appendonly yes, appendfsync everysec or always).`,
  };
}

async function describeNode(node: Redis): Promise<RedisDurability & { rank: number }> {
  const where = `${node.options.host ?? '127.0.0.1'}:${node.options.port ?? 6379}`;
  let aof: RedisDurability['aof'] = 'unknown';
  let fsync: RedisDurability['fsync'] = 'unknown';
  let rdb: RedisDurability['rdb'] = 'unknown';
  let evicts: Eviction;
  try {
    const [appendonly, appendfsync, save, maxmemory, policy] = await Promise.all(
      ['appendonly', 'appendfsync', 'save', 'maxmemory', 'maxmemory-policy'].map((name) =>
        configGet(node, name),
      ),
    );
    if (appendonly !== undefined) aof = appendonly === 'yes';
    if (appendfsync && FSYNC.has(appendfsync)) fsync = appendfsync as RedisDurability['fsync'];
    if (save !== undefined) rdb = save.trim() === '' ? false : save.trim();
    evicts = eviction(maxmemory, policy);
  } catch {
    // CONFIG is often disabled or renamed on managed services: INFO still tells about AOF
    // and eviction.
    try {
      const info = `${await node.info('persistence')}\n${await node.info('memory')}`;
      const enabled = infoField(info, 'aof_enabled');
      if (enabled !== undefined) aof = enabled === '1';
      evicts = eviction(infoField(info, 'maxmemory'), infoField(info, 'maxmemory_policy'));
    } catch (error) {
      throw new StoreUnavailableError(
        `Redis at ${where} did not answer INFO: ${error instanceof Error ? error.message : String(error)}`,
        { cause: error },
      );
    }
  }
  const assessed = assess(aof, fsync, rdb);
  const evictionRisk = evictionWarning(evicts);
  const warning = [assessed.warning, evictionRisk].filter(Boolean).join(' ');
  // A node that may evict records is weaker than any that only loses them on a restart.
  const rank = evictionRisk ? assessed.rank - 10 : assessed.rank;
  return {
    aof,
    fsync,
    rdb,
    loses: assessed.loses,
    node: where,
    ...evicts,
    rank,
    ...(warning ? { warning } : {}),
  };
}

/**
 * Reads what the Redis behind `client` keeps on disk (`CONFIG GET appendonly`, `appendfsync`,
 * `save`; `INFO persistence` when CONFIG is not allowed) and says what a restart would lose,
 * and whether it may evict keys (`maxmemory`, `maxmemory-policy`; `INFO memory` when CONFIG
 * is not allowed). On a Cluster every primary is read and the weakest is described (a node
 * that may evict counts as weaker than any that does not). `warning` is set when a restart
 * can lose acknowledged idempotency records, or when Redis may evict them under memory
 * pressure (any policy but `noeviction` with a `maxmemory`): log it at start. Records survive a
 * restart only with persistence (AOF `appendfsync always` loses nothing acknowledged,
 * `everysec` up to about a second of writes, RDB snapshots everything since the last one)
 * and a failover only for the writes the replicas acknowledged (see `waitForReplicas`).
 * A server that does not answer fails with `StoreUnavailableError`.
 */
export async function describeRedisDurability(client: Redis | Cluster): Promise<RedisDurability> {
  // By ioredis's own flag rather than instanceof: a client from another copy counts too.
  const nodes = client.isCluster ? (client as Cluster).nodes('master') : [client as Redis];
  if (nodes.length === 0) throw new StoreUnavailableError('Redis Cluster has no primary to read');
  const described = await Promise.all(nodes.map(describeNode));
  const { rank: _rank, ...weakest } = described.reduce((a, b) => (b.rank < a.rank ? b : a));
  return weakest;
}
