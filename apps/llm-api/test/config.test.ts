import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { openBackend } from '../src/backend.js';
import { ConfigError, describeConfig, parseConfig } from '../src/config.js';

function problemsOf(env: Record<string, string>): readonly string[] {
  try {
    parseConfig(env);
  } catch (error) {
    if (error instanceof ConfigError) return error.problems;
    throw error;
  }
  throw new Error('parseConfig accepted the environment');
}

describe('parseConfig', () => {
  it('defaults to 127.0.0.1:3000, the memory store and the local model', () => {
    const config = parseConfig({});
    expect(config).toEqual({
      host: '127.0.0.1',
      port: 3000,
      store: { kind: 'memory' },
      model: { kind: 'local', chunkDelayMs: 15 },
      keyPrefix: 'llm-api:',
      leaseMs: 30_000,
      storeTimeoutMs: 2_000,
      shutdownTimeoutMs: 25_000,
      otel: true,
    });
    expect(describeConfig(config)).toContain('store: memory');
    expect(parseConfig({ IDEM_OTEL: 'off' }).otel).toBe(false);
    expect(problemsOf({ IDEM_OTEL: 'yes' })).toEqual(['IDEM_OTEL must be on or off']);
  });

  it('chooses Redis with REDIS_URL and hides its password when describing it', () => {
    const config = parseConfig({ REDIS_URL: 'redis://:secret@cache:6380/2', PORT: '0' });
    expect(config.store).toEqual({ kind: 'redis', url: 'redis://:secret@cache:6380/2' });
    expect(config.port).toBe(0);
    expect(describeConfig(config)).not.toContain('secret');
  });

  it('chooses PostgreSQL with DATABASE_URL, hides its password, and refuses a second store', () => {
    const config = parseConfig({ DATABASE_URL: 'postgres://app:secret@db:5432/shop' });
    expect(config.store).toEqual({ kind: 'postgres', url: 'postgres://app:secret@db:5432/shop' });
    expect(describeConfig(config)).toContain('store: postgres postgres://app:***@db:5432/shop');
    expect(parseConfig({ DATABASE_URL: 'postgresql://db/shop' }).store.kind).toBe('postgres');
    expect(problemsOf({ DATABASE_URL: 'mysql://db/shop' })).toEqual([
      'DATABASE_URL must use postgres:// or postgresql://, not mysql://',
    ]);
    expect(problemsOf({ DATABASE_URL: 'postgres://db/x', REDIS_URL: 'redis://x' })).toEqual([
      'REDIS_URL and DATABASE_URL are both set; choose one store',
    ]);
    expect(
      problemsOf({
        DATABASE_URL: 'postgres://db/x',
        REDIS_URL: 'redis://x',
        DYNAMODB_TABLE: 'records',
      }),
    ).toEqual(['REDIS_URL and DYNAMODB_TABLE and DATABASE_URL are all set; choose one store']);
  });

  it('chooses DynamoDB with DYNAMODB_TABLE, with an optional endpoint and region', () => {
    expect(
      parseConfig({
        DYNAMODB_TABLE: 'idem-records',
        DYNAMODB_ENDPOINT: 'http://127.0.0.1:8000',
        AWS_REGION: 'eu-west-1',
      }).store,
    ).toEqual({
      kind: 'dynamodb',
      table: 'idem-records',
      endpoint: 'http://127.0.0.1:8000',
      region: 'eu-west-1',
    });
  });

  it('chooses an upstream model with UPSTREAM_URL, trailing slashes removed', () => {
    expect(
      parseConfig({ UPSTREAM_URL: 'https://api.example.com/v1/', UPSTREAM_API_KEY: 'sk-x' }).model,
    ).toEqual({
      kind: 'upstream',
      url: 'https://api.example.com/v1',
      apiKey: 'sk-x',
      timeoutMs: 120_000,
    });
  });

  it('bounds store calls by 2 s, or a third of a shorter lease', () => {
    expect(parseConfig({}).storeTimeoutMs).toBe(2_000);
    expect(parseConfig({ IDEM_LEASE_MS: '3000' }).storeTimeoutMs).toBe(1_000);
    expect(parseConfig({ IDEM_LEASE_MS: '100' }).storeTimeoutMs).toBe(50);
    expect(parseConfig({ IDEM_STORE_TIMEOUT_MS: '750' }).storeTimeoutMs).toBe(750);
  });

  it('passes the memory store bounds through', async () => {
    const config = parseConfig({
      IDEM_MEMORY_MAX_ENTRIES: '5000',
      IDEM_MEMORY_MAX_OUTCOME_BYTES: '65536',
      IDEM_MEMORY_MAX_BYTES: '1048576',
    });
    expect(config.store).toEqual({
      kind: 'memory',
      maxEntries: 5000,
      maxOutcomeBytes: 65536,
      maxBytes: 1_048_576,
    });
    const backend = await openBackend(config.store, 'test:');
    expect(backend.store.capabilities.maxOutcomeBytes).toBe(65536);
    // The byte budget is in force: an outcome larger than the whole budget is refused.
    const small = await openBackend(parseConfig({ IDEM_MEMORY_MAX_BYTES: '65536' }).store, 'test:');
    expect(small.store.capabilities.maxOutcomeBytes).toBeLessThanOrEqual(65_536);
    await small.close();
    await backend.close();
    expect(problemsOf({ IDEM_MEMORY_MAX_ENTRIES: '0' })).toEqual([
      'IDEM_MEMORY_MAX_ENTRIES="0" is not an integer from 1 to 100000000',
    ]);
  });

  it('treats empty variables as unset', () => {
    expect(parseConfig({ REDIS_URL: '', PORT: ' ', DYNAMODB_TABLE: '' }).store).toEqual({
      kind: 'memory',
    });
  });

  it.each([
    [{ PORT: 'abc' }, 'PORT="abc" is not an integer from 0 to 65535'],
    [{ PORT: '70000' }, 'PORT="70000" is not an integer from 0 to 65535'],
    [{ PORT: '-1' }, 'PORT="-1" is not an integer from 0 to 65535'],
    [{ HOST: 'a b' }, 'HOST="a b" is not a host name or address'],
    [{ REDIS_URL: 'not a url' }, 'REDIS_URL="not a url" is not a URL'],
    [{ REDIS_URL: 'http://cache:6379' }, 'REDIS_URL must use redis:// or rediss://, not http://'],
    [
      { REDIS_URL: 'redis://cache', DYNAMODB_TABLE: 'records' },
      'REDIS_URL and DYNAMODB_TABLE are both set; choose one store',
    ],
    [
      { DYNAMODB_ENDPOINT: 'http://127.0.0.1:8000' },
      'DYNAMODB_ENDPOINT is set but DYNAMODB_TABLE is not',
    ],
    [
      { DYNAMODB_TABLE: 'a' },
      'DYNAMODB_TABLE="a" is not a table name (3 to 255 of A-Z a-z 0-9 _ . -)',
    ],
    [
      { DYNAMODB_TABLE: 'records', DYNAMODB_ENDPOINT: 'ftp://x' },
      'DYNAMODB_ENDPOINT must use http:// or https://, not ftp://',
    ],
    [{ UPSTREAM_URL: 'api.openai.com' }, 'UPSTREAM_URL="api.openai.com" is not a URL'],
    [{ UPSTREAM_API_KEY: 'sk-x' }, 'UPSTREAM_API_KEY is set but UPSTREAM_URL is not'],
    [{ IDEM_LEASE_MS: '10' }, 'IDEM_LEASE_MS="10" is not an integer from 100 to 3600000'],
    [
      { IDEM_STORE_TIMEOUT_MS: '0' },
      'IDEM_STORE_TIMEOUT_MS="0" is not an integer from 50 to 60000',
    ],
    [
      { IDEM_LEASE_MS: '2000', IDEM_STORE_TIMEOUT_MS: '2000' },
      'IDEM_STORE_TIMEOUT_MS (2000) must be shorter than IDEM_LEASE_MS (2000)',
    ],
    [
      { IDEM_KEY_PREFIX: 'has space' },
      'IDEM_KEY_PREFIX must be 1 to 100 printable ASCII characters without spaces',
    ],
  ])('refuses %j', (env, problem) => {
    expect(problemsOf(env)).toEqual([problem]);
  });

  it('reports every problem at once, in a message that points to the README', () => {
    const env = {
      PORT: 'x',
      REDIS_URL: 'redis://a',
      DYNAMODB_TABLE: 'records',
      UPSTREAM_URL: '::',
    };
    expect(() => parseConfig(env)).toThrow(/Invalid configuration:\n {2}- PORT="x"/);
    expect(problemsOf(env)).toHaveLength(3);
    expect(() => parseConfig(env)).toThrow(/README/);
  });
});

describe('the server entry point', () => {
  const appDir = fileURLToPath(new URL('..', import.meta.url));
  const run = (env: Record<string, string>) =>
    spawnSync(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
      cwd: appDir,
      env: {
        ...process.env,
        REDIS_URL: '',
        DYNAMODB_TABLE: '',
        DATABASE_URL: '',
        UPSTREAM_URL: '',
        ...env,
      },
      encoding: 'utf8',
      timeout: 20_000,
    });

  it('refuses a bad configuration at start with its message and exit code 1', () => {
    const result = run({ PORT: 'eighty', REDIS_URL: 'redis://x', DYNAMODB_TABLE: 'records' });
    expect(result.status).toBe(1);
    expect(result.stderr).toContain('Invalid configuration');
    expect(result.stderr).toContain('PORT="eighty" is not an integer from 0 to 65535');
    expect(result.stderr).toContain('REDIS_URL and DYNAMODB_TABLE are both set; choose one store');
    expect(result.stdout).not.toContain('listening');
  });

  it('refuses to start when Redis does not answer', () => {
    const result = run({ PORT: '0', REDIS_URL: 'redis://127.0.0.1:1' });
    expect(result.status).toBe(1);
    expect(result.stderr).toMatch(
      /cannot start: Redis at redis:\/\/127\.0\.0\.1:1 does not answer/,
    );
  });
});
