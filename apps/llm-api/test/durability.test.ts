import { describe, expect, it } from 'vitest';
import { openBackend } from '../src/backend.js';
import { startOwnRedis } from './own-redis.js';
import { randomPrefix } from './redis.js';

/** Opens the Redis backend on a redis-server started with `args`; returns the warnings. */
async function warningsFor(args: string[]): Promise<string[]> {
  const redis = await startOwnRedis(args);
  const warnings: string[] = [];
  try {
    const backend = await openBackend({ kind: 'redis', url: redis.url }, randomPrefix(), {
      timeoutMs: 1_000,
      warn: (message) => warnings.push(message),
    });
    await backend.close();
  } finally {
    await redis.stop();
  }
  return warnings;
}

describe('the start-up warning about what Redis keeps on disk', () => {
  it('warns when Redis keeps nothing on disk', async () => {
    const warnings = await warningsFor(['--save', '', '--appendonly', 'no']);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(/keeps nothing on disk/);
  });

  it('warns when Redis only takes RDB snapshots', async () => {
    const warnings = await warningsFor(['--save', '3600 1', '--appendonly', 'no']);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(/no AOF, only RDB snapshots \(save "3600 1"\)/);
  });

  it('says nothing when Redis runs with AOF', async () => {
    expect(await warningsFor(['--save', '', '--appendonly', 'yes'])).toEqual([]);
  });

  it('falls back to INFO when CONFIG is disabled, and still warns without AOF', async () => {
    const off = await warningsFor([
      '--save',
      '',
      '--appendonly',
      'no',
      '--rename-command',
      'CONFIG',
      '',
    ]);
    expect(off).toHaveLength(1);
    expect(off[0]).toMatch(/AOF is off; CONFIG is disabled/);
    const on = await warningsFor([
      '--save',
      '',
      '--appendonly',
      'yes',
      '--rename-command',
      'CONFIG',
      '',
    ]);
    expect(on).toEqual([]);
  });
});
