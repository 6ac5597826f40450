import type { Redis } from 'ioredis';

/** What a Redis keeps on disk, as far as the app could tell. */
export type RedisDurability =
  | { kind: 'aof'; fsync: string }
  | { kind: 'rdb-only'; save: string }
  | { kind: 'none' }
  | { kind: 'unknown'; reason: string };

async function configValue(client: Redis, name: string): Promise<string> {
  const reply = (await client.config('GET', name)) as unknown as string[];
  const value = reply[1];
  if (value === undefined) throw new Error(`CONFIG GET ${name} returned nothing`);
  return value;
}

/**
 * Reads the persistence settings: `CONFIG GET appendonly / appendfsync / save`, or, where
 * CONFIG is disabled (managed Redis, renamed commands), `INFO persistence`, which tells AOF
 * from no AOF but not whether RDB snapshots are scheduled.
 */
export async function redisDurability(client: Redis): Promise<RedisDurability> {
  try {
    if ((await configValue(client, 'appendonly')) === 'yes') {
      return { kind: 'aof', fsync: await configValue(client, 'appendfsync') };
    }
    const save = (await configValue(client, 'save')).trim();
    return save === '' ? { kind: 'none' } : { kind: 'rdb-only', save };
  } catch (configError) {
    try {
      const info = await client.info('persistence');
      const aof = info.match(/^aof_enabled:(\d)/m)?.[1];
      if (aof === '1') return { kind: 'aof', fsync: 'unknown (CONFIG is disabled)' };
      if (aof === '0') {
        return {
          kind: 'unknown',
          reason: 'AOF is off; CONFIG is disabled, so RDB snapshots are unknown',
        };
      }
      return { kind: 'unknown', reason: 'INFO persistence has no aof_enabled' };
    } catch {
      const why = configError instanceof Error ? configError.message : String(configError);
      return { kind: 'unknown', reason: `CONFIG GET and INFO failed (${why})` };
    }
  }
}

/**
 * The start-up warning for a Redis that can lose records on restart, or undefined when it
 * runs with AOF. Records lost with Redis mean retries that run the model and bill again.
 */
export function durabilityWarning(where: string, durability: RedisDurability): string | undefined {
  const consequence =
    'a Redis restart loses idempotency records and the ledger, and retries of the lost keys run the model again. ' +
    'Run Redis with AOF (appendonly yes, appendfsync everysec or always); see apps/llm-api/README.md.';
  switch (durability.kind) {
    case 'aof':
      return undefined;
    case 'none':
      return `Redis at ${where} keeps nothing on disk (appendonly no, save ""): ${consequence}`;
    case 'rdb-only':
      return `Redis at ${where} has no AOF, only RDB snapshots (save "${durability.save}"): writes since the last snapshot are lost; ${consequence}`;
    case 'unknown':
      return `Could not tell whether Redis at ${where} persists anything (${durability.reason}): if it keeps nothing on disk, ${consequence}`;
  }
}
