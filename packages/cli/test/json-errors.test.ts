import { randomBytes } from 'node:crypto';
import { createServer } from 'node:net';
import { createRedisStore, recommendedRedisOptions } from '@idem/store-redis';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../src/index.js';
import { type SilentServer, silentServer } from './in-process.js';
import { type CliRun, idem, requireBuild } from './spawn-cli.js';

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

/**
 * Runs `idem ...args --json` and checks the one promise `--json` makes on every path: exactly
 * one line on stdout, a JSON object with `error: { code, message }` (the exit code is not 0),
 * nothing on stderr. Returns the object.
 */
async function jsonFailure(exit: number, code: string, ...args: string[]) {
  return checkFailure(await idem(...args, '--json'), exit, code);
}

/** {@link jsonFailure} through `runCli` in this process (no process start: quicker). */
async function jsonFailureInProcess(exit: number, code: string, ...args: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  const status = await runCli([...args, '--json'], {
    out: (line) => out.push(`${line}\n`),
    err: (line) => err.push(`${line}\n`),
  });
  return checkFailure({ code: status, stdout: out.join(''), stderr: err.join('') }, exit, code);
}

function checkFailure(run: CliRun, exit: number, code: string) {
  expect(run.stderr).toBe('');
  expect(run.code).toBe(exit);
  const lines = run.stdout.split('\n');
  expect(lines).toHaveLength(2); // one line and its newline
  expect(lines[1]).toBe('');
  const json = JSON.parse(lines[0] as string) as { error: { code: string; message: string } };
  expect(json.error.code).toBe(code);
  expect(typeof json.error.message).toBe('string');
  expect(json.error.message.length).toBeGreaterThan(0);
  return json;
}

/** A port nothing listens on: one the system just gave out and took back. */
async function deadPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

describe('idem --json: every error is one JSON object on stdout, with a non-zero exit', () => {
  let client: Redis;
  const prefix = `idem-cli-json:${randomBytes(4).toString('hex')}:`;
  const onRedis = (...rest: string[]) => ['--store', REDIS_URL, '--prefix', prefix, ...rest];

  beforeAll(async () => {
    requireBuild();
    client = new Redis(REDIS_URL, { ...recommendedRedisOptions(), lazyConnect: true });
    await client.connect().catch((error: unknown) => {
      throw new Error(
        `No Redis at ${REDIS_URL} (${String(error)}): start it with \`bash scripts/bootstrap.sh --services\` or set REDIS_URL`,
      );
    });
  });
  afterAll(async () => {
    if (!client) return;
    const keys = await client.keys(`${prefix}*`);
    if (keys.length > 0) await client.del(...keys);
    client.disconnect();
  });

  it.each([
    [[], /Unknown command/],
    [['inspect', 'k', ...onRedis('--scope', '1', '--bogus')], /Unknown option/],
    [['inspect', 'k', '--scope', '1'], /--store is required/],
    [['inspect', 'k', ...onRedis()], /exactly one of --scope/],
    [['inspect', 'k', ...onRedis('--scope', '{bad')], /--scope must be JSON/],
    [['inspect', 'nothex', ...onRedis('--storage-key')], /64 lowercase hex/],
    [['inspect', 'k', ...onRedis('--scope', '1', '--timeout-ms', '0')], /--timeout-ms/],
  ])('bad arguments %j: usage, exit 2', async (args, message) => {
    const json = await jsonFailureInProcess(2, 'usage', ...(args as string[]));
    expect(json.error.message).toMatch(message);
  });

  it('bad arguments through the built executable: usage, exit 2, the JSON on stdout', async () => {
    const json = await jsonFailure(2, 'usage', 'inspect', 'k', ...onRedis('--bogus'));
    expect(json.error.message).toMatch(/Unknown option '--bogus'/);
  });

  it('options a store refuses before sending anything (a table name): usage, exit 2', async () => {
    const json = await jsonFailure(
      2,
      'usage',
      ...['inspect', 'k', '--scope', '1', '--table', 'bad;drop'],
      ...['--store', 'postgres://root@127.0.0.1:1/test'],
    );
    expect(json.error.message).toMatch(/table must be/);
  });

  it.each([
    ['redis://:hunter2@h:99999', /--store is not a URL: redis:\/\/:\*\*\*@h:99999/],
    ['mysql://127.0.0.1', /Unknown store mysql:/],
    ['dynamodb://?region=eu-west-1', /name the table/],
  ])('a bad store URL %s: bad_store_url, exit 2, password masked', async (store, message) => {
    const json = await jsonFailureInProcess(
      2,
      'bad_store_url',
      ...['inspect', 'k', '--scope', '1', '--store', store],
    );
    expect(json.error.message).toMatch(message);
    expect(JSON.stringify(json)).not.toContain('hunter2');
  });

  it('a Redis on a dead port: store_unavailable, exit 1, with the cause', async () => {
    const port = await deadPort();
    const json = await jsonFailure(
      1,
      'store_unavailable',
      ...['inspect', 'k', '--scope', '1', '--store', `redis://:hunter2@127.0.0.1:${port}`],
    );
    expect(json.error.message).toMatch(/ECONNREFUSED/);
    expect(json.error.message).not.toContain('hunter2');
  });

  describe('a store that never answers', () => {
    let server: SilentServer;
    let port = 0;
    beforeAll(async () => {
      server = await silentServer();
      port = server.port;
    });
    afterAll(() => server.close());

    it('gives up after --timeout-ms: timeout, exit 1', async () => {
      const json = await jsonFailure(
        1,
        'timeout',
        ...['inspect', 'k', '--scope', '1', '--timeout-ms', '500'],
        ...['--store', `redis://127.0.0.1:${port}`],
      );
      expect(json.error.message).toMatch(/gave up after 500 ms/);
    });
  });

  it('a Redis database the server does not have: store_error, exit 1', async () => {
    const missing = new URL(REDIS_URL);
    missing.pathname = '/99';
    const json = await jsonFailure(
      1,
      'store_error',
      ...['inspect', 'k', '--scope', '1', '--prefix', prefix, '--store', missing.href],
    );
    expect(json.error.message).toMatch(/cannot select database 99/);
  });

  it('a command the store fails (a foreign value at the storage key): the store calls it STORE_UNAVAILABLE, exit 1', async () => {
    const key = randomBytes(32).toString('hex');
    // Not a record: a list where the record's hash would be. The store's script fails on it,
    // and the Redis store reports every failed command as STORE_UNAVAILABLE (with the cause).
    await client.rpush(`${prefix}{${key}}`, 'not a record');
    const json = await jsonFailure(
      1,
      'store_unavailable',
      ...['inspect', key, ...onRedis('--storage-key')],
    );
    expect(json.error.message).toMatch(/WRONGTYPE/);
  });

  it('an unknown key: not_found, exit 3, for inspect, release and delete', async () => {
    const key = randomBytes(32).toString('hex');
    for (const action of ['inspect', 'release', 'delete']) {
      const force = action === 'release' ? ['--force'] : [];
      const json = await jsonFailure(
        3,
        'not_found',
        action,
        key,
        ...onRedis('--storage-key'),
        ...force,
      );
      expect(json).toMatchObject({ storageKey: key });
      expect(json.error.message).toBe(`no record at ${key}`);
    }
  });

  it('release of a completed record: not_in_progress, exit 4, the record left as it is', async () => {
    const store = createRedisStore({ client, keyPrefix: prefix });
    const key = randomBytes(32).toString('hex');
    const owner = randomBytes(8).toString('hex');
    await store.acquire({ key, owner, fingerprint: 'f', leaseMs: 60_000, retentionMs: 60_000 });
    await store.complete({ key, owner, outcome: new Uint8Array([1]), retentionMs: 60_000 });
    const json = await jsonFailure(
      4,
      'not_in_progress',
      'release',
      key,
      ...onRedis('--storage-key'),
      '--force',
    );
    expect(json).toMatchObject({ storageKey: key, ok: false, reason: 'not_in_progress' });
    expect((await store.get(key))?.status).toBe('completed');
  });
});
