// clirev2: an adversarial review of the CLI against the real Redis and PostgreSQL: commands
// that cut off a live execution, `redis://` URLs whose query ioredis takes as client options,
// Node's warnings under --json, glob characters in a prefix, and the read-then-delete race.
// Findings that were fixed are plain `it` (each seen failing on the old source); a finding
// left is `it.fails` with its FINDING comment; attacks that held are plain `it` too.
import { randomBytes } from 'node:crypto';
import { createServer, type Socket, connect as tcpConnect } from 'node:net';
import { createPostgresStore } from '@idem/store-postgres';
import { createRedisStore } from '@idem/store-redis';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  DATABASE_URL,
  postgresTable,
  REDIS_URL,
  redisUnderPrefix,
  runInProcess,
} from './in-process.js';
import { idem, requireBuild } from './spawn-cli.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const hex = () => randomBytes(32).toString('hex');
const lease = (leaseMs: number) => ({ fingerprint: 'fp', leaseMs, retentionMs: 600_000 });
const parsed = (run: { lines: string[] }) => JSON.parse(run.lines[0] as string);

describe('clirev2: release and delete of a live execution need the operator to say so', () => {
  const redis = redisUnderPrefix('clirev2-live');
  const { prefix } = redis;
  const store = () => createRedisStore({ client: redis.client(), keyPrefix: prefix });
  const onRedis = (key: string) => [key, '--storage-key', '--store', REDIS_URL, '--prefix', prefix];
  const completeAs = (key: string, owner: string) =>
    store().complete({ key, owner, outcome: new Uint8Array([1]), retentionMs: 600_000 });

  // FIXED (was FINDING MEDIUM): `release` without --owner/--fence released whatever was in
  // progress: a retry that took the key over between the operator's inspect and release was
  // cut off (its side effect may run twice), with nothing on the command line saying so.
  it('release without --owner/--fence/--force: usage error, nothing sent, the execution completes', async () => {
    const key = hex();
    await store().acquire({ key, owner: 'owner-live', ...lease(60_000) });
    const bare = await runInProcess('release', ...onRedis(key), '--json');
    // Before the fix: 0, the record released at fence 2.
    expect(bare.code).toBe(2);
    expect(parsed(bare).error).toMatchObject({
      code: 'usage',
      message: expect.stringContaining('--force'),
    });
    expect(await store().get(key)).toMatchObject({ status: 'in_progress', owner: 'owner-live' });
    expect(await completeAs(key, 'owner-live')).toEqual({ ok: true });
    // Saying so: --force releases whatever is in progress, as `release` did before.
    const other = hex();
    await store().acquire({ key: other, owner: 'owner-stuck', ...lease(60_000) });
    expect((await runInProcess('release', ...onRedis(other), '--force')).code).toBe(0);
    expect(await store().get(other)).toMatchObject({ status: 'released', fence: 2 });
    // --force means nothing to inspect.
    expect((await runInProcess('inspect', ...onRedis(other), '--force')).code).toBe(2);
  });

  // FIXED (was FINDING MEDIUM): `delete` removed an in-progress record whose lease was live
  // without any check or flag: its execution could no longer complete and the next request ran
  // again beside it (README: "possibly while it still runs"), where `release --owner/--fence`
  // frees a stuck one atomically.
  it('delete of a live execution without --force on Redis: exit 6 in_progress, left as it is', async () => {
    const key = hex();
    await store().acquire({ key, owner: 'owner-live', ...lease(60_000) });
    const refused = await runInProcess('delete', ...onRedis(key), '--json');
    // Before the fix: 0, { deleted: true, was: { status: 'in_progress', ... } }.
    expect(refused.code).toBe(6);
    expect(parsed(refused)).toMatchObject({
      storageKey: key,
      deleted: false,
      status: 'in_progress',
      owner: 'owner-live',
      fence: 1,
      error: { code: 'in_progress', message: expect.stringContaining('--force') },
    });
    const text = await runInProcess('delete', ...onRedis(key));
    expect(text.code).toBe(6);
    expect(text.lines.join('\n')).toMatch(/is in progress \(owner owner-live, fence 1, lease live/);
    expect(await completeAs(key, 'owner-live')).toEqual({ ok: true });
    // A completed record is forgotten without --force, as before.
    expect((await runInProcess('delete', ...onRedis(key))).code).toBe(0);
    // An execution whose lease passed is not protected (the next acquire takes it over anyway).
    const passed = hex();
    await store().acquire({ key: passed, owner: 'owner-gone', ...lease(100) });
    await sleep(300);
    expect((await runInProcess('delete', ...onRedis(passed))).code).toBe(0);
    // --force deletes a live one, as `delete` did before.
    const forced = hex();
    await store().acquire({ key: forced, owner: 'owner-live', ...lease(60_000) });
    expect((await runInProcess('delete', ...onRedis(forced), '--force')).code).toBe(0);
    expect(await store().get(forced)).toBeUndefined();
  });

  describe('on PostgreSQL', () => {
    const { pool, table } = postgresTable('idem_clirev2');
    const pgStore = createPostgresStore({ pool, table });
    beforeAll(() => pgStore.ensureSchema());

    // FIXED (was FINDING MEDIUM): as on Redis.
    it('delete of a live execution without --force: exit 6, release without --owner/--fence: exit 2', async () => {
      const key = hex();
      await pgStore.acquire({ key, owner: 'owner-pg', ...lease(60_000) });
      const args = [key, '--storage-key', '--store', DATABASE_URL, '--table', table, '--json'];
      const deleted = await runInProcess('delete', ...args);
      expect(deleted.code).toBe(6);
      expect(parsed(deleted)).toMatchObject({ owner: 'owner-pg', error: { code: 'in_progress' } });
      expect((await runInProcess('release', ...args)).code).toBe(2);
      expect(await pgStore.get(key)).toMatchObject({ status: 'in_progress', owner: 'owner-pg' });
      expect((await runInProcess('release', ...args, '--fence', '1')).code).toBe(0);
      expect(await pgStore.get(key)).toMatchObject({ status: 'released', fence: 2 });
    });
  });
});

describe('clirev2: query parameters of a redis:// URL', () => {
  beforeAll(() => requireBuild());
  const base = new URL(REDIS_URL);
  const withQuery = (query: string) => `redis://${base.host}/${query}`;
  const inspect = (store: string, ...more: string[]) =>
    idem('inspect', hex(), '--storage-key', '--store', store, '--timeout-ms', '5000', ...more);

  // FIXED (was FINDING LOW): ioredis takes every query parameter as a client option, over the
  // CLI's own: `?db=abc` and `?connectTimeout=abc` ended the process with an unhandled error
  // and a stack trace (exit 1, no JSON line under --json), and `?retryStrategy=x` or
  // `?lazyConnect=` silently replaced the options the CLI's bounds rely on.
  it.each([
    '?db=abc',
    '?connectTimeout=abc',
    '?retryStrategy=x',
    '?lazyConnect=',
    '?keyPrefix=other:',
    '?db=1&db=2',
  ])('%s: bad_store_url, exit 2, one JSON line and nothing on stderr', async (query) => {
    const run = await inspect(withQuery(query), '--json');
    expect(run.stderr).toBe('');
    expect(run.code).toBe(2);
    expect(JSON.parse(run.stdout)).toMatchObject({ error: { code: 'bad_store_url' } });
  });

  it('the parameters it takes still work: db, family (a database named twice is refused)', async () => {
    expect((await inspect(withQuery('?db=0'))).code).toBe(3);
    expect((await inspect(withQuery('?family=4'))).code).toBe(3);
    const twice = await inspect(`redis://${base.host}/0?db=0`, '--json');
    expect(twice.code).toBe(2);
    expect(twice.stdout).toMatch(/named twice/);
  });
});

describe('clirev2: --json keeps stderr empty when a driver warns', () => {
  beforeAll(() => requireBuild());

  // FIXED (was FINDING LOW): pg warns through process.emitWarning about `?sslmode=require`,
  // and Node's default listener wrote it on stderr: `--json` promises nothing there.
  it('postgres://...?sslmode=require --json: the one JSON line, an empty stderr', async () => {
    const url = new URL(DATABASE_URL);
    url.searchParams.set('sslmode', 'require');
    const run = await idem(
      ...['inspect', hex(), '--storage-key', '--store', url.href, '--timeout-ms', '5000', '--json'],
    );
    // Before the fix: "(node:...) Warning: SECURITY WARNING: The SSL modes 'prefer', ..."
    expect(run.stderr).toBe('');
    expect(run.code).toBe(1); // the test server has no TLS
    expect(JSON.parse(run.stdout)).toMatchObject({ error: { code: 'store_unavailable' } });
  });
});

describe('clirev2: glob characters in a prefix touch only the exact key (held)', () => {
  const redis = redisUnderPrefix('clirev2-glob');
  const { pool, table } = postgresTable('idem_clirev2g');

  it('Redis: --prefix "<p>t[ab]*?:" deletes its own record, never tenant "ta-x:"', async () => {
    const globbed = `${redis.prefix}t[ab]*?:`;
    const tenant = `${redis.prefix}ta-x:`;
    const key = hex();
    const mine = createRedisStore({ client: redis.client(), keyPrefix: globbed });
    const theirs = createRedisStore({ client: redis.client(), keyPrefix: tenant });
    for (const s of [mine, theirs]) {
      await s.acquire({ key, owner: 'o', ...lease(60_000) });
      await s.complete({ key, owner: 'o', outcome: new Uint8Array([7]), retentionMs: 600_000 });
    }
    const args = [key, '--storage-key', '--store', REDIS_URL];
    expect((await runInProcess('inspect', ...args, '--prefix', `${redis.prefix}*`)).code).toBe(3);
    expect((await runInProcess('delete', ...args, '--prefix', globbed)).code).toBe(0);
    expect(await mine.get(key)).toBeUndefined();
    expect(await theirs.get(key)).toMatchObject({ status: 'completed' });
  });

  it('PostgreSQL: --prefix "%_" deletes its own row, never tenant "ab"', async () => {
    const mine = createPostgresStore({ pool, table, keyPrefix: '%_' });
    const theirs = createPostgresStore({ pool, table, keyPrefix: 'ab' });
    await mine.ensureSchema();
    const key = hex();
    for (const s of [mine, theirs]) {
      await s.acquire({ key, owner: 'o', ...lease(60_000) });
      await s.complete({ key, owner: 'o', outcome: new Uint8Array([7]), retentionMs: 600_000 });
    }
    const args = [key, '--storage-key', '--store', DATABASE_URL, '--table', table];
    expect((await runInProcess('inspect', ...args, '--prefix', '%')).code).toBe(3);
    expect((await runInProcess('delete', ...args, '--prefix', '%_')).code).toBe(0);
    expect(await mine.get(key)).toBeUndefined();
    expect(await theirs.get(key)).toMatchObject({ status: 'completed' });
  });
});

/** A promise and what fulfils it. */
function signal(): { fired: Promise<void>; fire: () => void } {
  let fire: () => void = () => {};
  const fired = new Promise<void>((resolve) => {
    fire = resolve;
  });
  return { fired, fire };
}

/**
 * A TCP proxy to the test Redis that, at the `n`-th script call (EVALSHA/EVAL) a client sends,
 * either holds it until `release()` (`held` resolves when it is held), or passes it on and
 * breaks the connection when its answer comes back, never passing that on (`drop`).
 */
async function scriptProxy(n: number, mode: 'hold' | 'drop' = 'hold') {
  const target = new URL(REDIS_URL);
  const gate = signal();
  const held = signal();
  let calls = 0;
  const sockets = new Set<Socket>();
  const server = createServer((client) => {
    const upstream = tcpConnect(Number(target.port || 6379), target.hostname);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('error', () => {});
      s.on('close', () => {
        client.destroy();
        upstream.destroy();
      });
    }
    let dropAnswer = false;
    upstream.on('data', (chunk) => {
      if (dropAnswer) client.destroy();
      else client.write(chunk);
    });
    let chain = Promise.resolve();
    client.on('data', (chunk) => {
      const script = /\r\n(evalsha|eval)\r\n/i.test(chunk.toString('latin1'));
      const index = script ? ++calls : 0;
      chain = chain.then(async () => {
        if (index === n) {
          held.fire();
          if (mode === 'hold') await gate.fired;
          else dropAnswer = true;
        }
        upstream.write(chunk);
      });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `redis://127.0.0.1:${(server.address() as { port: number }).port}`,
    held: held.fired,
    release: gate.fire,
    async close() {
      gate.fire();
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

describe('clirev2: a record that changes between the read and the delete', () => {
  const redis = redisUnderPrefix('clirev2-race');
  const { prefix } = redis;
  const store = () => createRedisStore({ client: redis.client(), keyPrefix: prefix });

  // FIXED (was FINDING LOW): `delete` read the record (inspect) and then deleted whatever the
  // key held in a second atomic step: a request that took a released (or expired) key in
  // between had its live execution deleted without --force, and the output said it forgot "a
  // released key". Now the CLI passes the status, owner and fence it read to the store's
  // `admin.delete`, which deletes only while the record still holds them (in the same atomic
  // step) and otherwise answers `changed`: exit 5, the retry keeps the key.
  /** `idem delete` of a released key that a retry takes over between the CLI's read and its delete. */
  async function deleteRacingRetry(key: string, more: string[]) {
    await store().acquire({ key, owner: 'owner-failed', ...lease(60_000) });
    await store().release({ key, owner: 'owner-failed', retentionMs: 600_000 });
    // The admin scripts are loaded first, so each of the CLI's calls is one EVALSHA.
    await store().admin?.inspect(key);
    await store().admin?.delete(hex());
    const proxy = await scriptProxy(2); // the CLI's inspect, then its delete
    try {
      const deleting = runInProcess(
        ...['delete', key, '--storage-key', '--store', proxy.url, '--prefix', prefix],
        ...[...more, '--timeout-ms', '20000'],
      );
      await proxy.held;
      const retry = await store().acquire({ key, owner: 'owner-retry', ...lease(60_000) });
      expect(retry).toMatchObject({ kind: 'acquired', fence: 2 });
      proxy.release();
      return await deleting;
    } finally {
      await proxy.close();
    }
  }

  it('a retry that takes the key between the read and the delete keeps it', async () => {
    const key = hex();
    const deleted = await deleteRacingRetry(key, ['--json']);
    // Before the fix: 0, { deleted: true, was: { status: 'released', ... } }, the retry gone.
    expect(await store().get(key)).toMatchObject({ status: 'in_progress', owner: 'owner-retry' });
    expect(deleted.code).toBe(5);
    expect(parsed(deleted)).toEqual({
      storageKey: key,
      deleted: false,
      reason: 'changed',
      status: 'in_progress',
      owner: 'owner-retry',
      fence: 2,
      was: { status: 'released', owner: 'owner-failed', fence: 1, outcomeBytes: 0 },
      error: { code: 'changed', message: expect.stringContaining('changed since it was read') },
    });
    const write = { key, owner: 'owner-retry', retentionMs: 600_000 };
    expect(await store().complete({ ...write, outcome: new Uint8Array([1]) })).toEqual({
      ok: true,
    });
  });

  it('the text output names the record read and what the key holds now (exit 5)', async () => {
    const key = hex();
    expect(await deleteRacingRetry(key, [])).toEqual({
      code: 5,
      lines: [
        `${key} changed since it was read (released, owner owner-failed, fence 1): it is in_progress now, owner owner-retry at fence 2; left as it is (inspect it again before deleting)`,
      ],
    });
    expect(await store().get(key)).toMatchObject({ status: 'in_progress', owner: 'owner-retry' });
  });
});

describe('clirev2: a Redis connection that breaks after the command was sent (held)', () => {
  const redis = redisUnderPrefix('clirev2-drop');
  const { prefix } = redis;
  const store = () => createRedisStore({ client: redis.client(), keyPrefix: prefix });

  it.each([
    ['release', 1, ['--force']],
    ['delete', 2, ['--force']],
  ] as const)(
    '%s: exit 1, one JSON line, at once (not at --timeout-ms)',
    async (action, n, more) => {
      const key = hex();
      await store().acquire({ key, owner: 'owner-a', ...lease(60_000) });
      await store().admin?.inspect(key); // the admin scripts loaded: one EVALSHA a call
      const proxy = await scriptProxy(n, 'drop');
      try {
        const started = performance.now();
        const run = await runInProcess(
          ...[action, key, '--storage-key', '--store', proxy.url, '--prefix', prefix, ...more],
          ...['--json', '--timeout-ms', '30000'],
        );
        expect(performance.now() - started).toBeLessThan(15_000);
        expect(run.code).toBe(1);
        expect(run.lines).toHaveLength(1);
        expect(parsed(run).error.code).toBe('store_unavailable');
        // The store applied it; its answer was lost (exit 1 means: inspect the key).
        expect((await store().get(key))?.owner).not.toBe('owner-a');
      } finally {
        await proxy.close();
      }
    },
  );
});
