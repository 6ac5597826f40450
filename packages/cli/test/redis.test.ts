import { randomBytes } from 'node:crypto';
import { deriveStorageKey } from '@idem/core';
import { withIdempotency } from '@idem/http';
import { createRedisStore, recommendedRedisOptions } from '@idem/store-redis';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idem, idemJson, requireBuild } from './spawn-cli.js';

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('idem against a real Redis, on records an @idem/http handler wrote', () => {
  let client: Redis;
  const prefix = `idem-cli-test:${randomBytes(4).toString('hex')}:`;
  const store = () => createRedisStore({ client, keyPrefix: prefix });
  const http = (...rest: string[]) => [
    '--store',
    REDIS_URL,
    '--prefix',
    prefix,
    '--principal',
    'acct-1',
    '--operation',
    'POST /orders',
    ...rest,
  ];

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

  it('a database the server does not have is a store error, never database 0', async () => {
    // ioredis connects even when the URL's SELECT fails, then runs commands on database 0.
    const key = randomBytes(32).toString('hex');
    const owner = randomBytes(8).toString('hex');
    const lease = { leaseMs: 60_000, retentionMs: 60_000 };
    await store().acquire({ key, owner, fingerprint: 'f', ...lease });
    const missing = new URL(REDIS_URL);
    missing.pathname = '/99';
    const args = ['delete', key, '--storage-key', '--prefix', prefix, '--store', missing.href];
    const run = await idem(...args);
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/cannot select database 99/);
    expect((await store().get(key))?.owner).toBe(owner);
  });

  it('inspect, release a stuck execution (fenced), inspect the replay, then delete it', async () => {
    let gate: () => void = () => {};
    const opened = new Promise<void>((resolve) => {
      gate = resolve;
    });
    const fences: number[] = [];
    const handler = withIdempotency(
      async (_request, ctx) => {
        fences.push(ctx?.fence ?? 0);
        if (fences.length === 1) await opened; // the first execution is stuck
        return Response.json({ order: fences.length });
      },
      { store: store(), scope: () => ({ principal: 'acct-1' }), leaseMs: 60_000 },
    );
    const send = () =>
      handler(
        new Request('http://localhost/orders', {
          method: 'POST',
          headers: { 'Idempotency-Key': '"order-7"', 'content-type': 'application/json' },
          body: '{"qty":1}',
        }),
      );
    const stuck = send();
    for (let i = 0; i < 100 && fences.length === 0; i++) await sleep(20);

    const seen = await idemJson('inspect', 'order-7', ...http());
    expect(seen.code).toBe(0);
    expect(seen.json).toMatchObject({
      found: true,
      status: 'in_progress',
      fence: 1,
      outcomeBytes: 0,
    });
    const storageKey = deriveStorageKey(['idem/http/v1', 'acct-1', 'POST /orders'], 'order-7');
    expect(seen.json.storageKey).toBe(storageKey);
    expect(Number(seen.json.leaseUntil)).toBeGreaterThan(Number(seen.json.now));

    const released = await idemJson('release', 'order-7', ...http(), '--force');
    expect(released).toEqual({
      code: 0,
      json: { storageKey, ok: true, fence: 2, previousOwner: seen.json.owner },
    });

    // The stuck execution finishes late: it can no longer record its outcome.
    gate();
    await stuck;
    const tombstone = await idemJson('inspect', 'order-7', ...http());
    expect(tombstone.json).toMatchObject({ status: 'released', fence: 2, outcomeBytes: 0 });
    // A retry executes again, fenced above the forced release.
    const retry = await send();
    expect(retry.status).toBe(200);
    expect(fences).toEqual([1, 3]);

    const done = await idemJson('inspect', 'order-7', ...http());
    expect(done.json).toMatchObject({ status: 'completed', fence: 3 });
    expect(Number(done.json.outcomeBytes)).toBeGreaterThan(0);
    const refused = await idemJson('release', 'order-7', ...http(), '--force');
    expect(refused).toEqual({
      code: 4,
      json: {
        storageKey,
        ok: false,
        reason: 'not_in_progress',
        error: { code: 'not_in_progress', message: expect.stringContaining('is not in progress') },
      },
    });
    expect((await send()).headers.get('idempotent-replayed')).toBe('true');

    const text = await idem(
      'delete',
      storageKey,
      '--storage-key',
      '--store',
      REDIS_URL,
      '--prefix',
      prefix,
    );
    expect(text).toMatchObject({ code: 0, stderr: '' });
    expect(text.stdout.split('\n')).toEqual([
      `deleted ${storageKey}`,
      expect.stringMatching(
        /^it held a completed outcome \(\d+ bytes, as read just before: fence 3\): the next request with this key executes again$/,
      ),
      '',
    ]);
    expect(await client.exists(`${prefix}{${storageKey}}`)).toBe(0);
    const gone = await idem('inspect', 'order-7', ...http());
    expect(gone.code).toBe(3);
    expect(gone.stdout).toContain('no record');
  });

  it('shows a record in text: status, owner, fence, lease and retention', async () => {
    const key = deriveStorageKey(['tenant-9', 'charge'], 'abc');
    await store().acquire({
      key,
      fingerprint: 'f',
      owner: 'owner-1',
      leaseMs: 30_000,
      retentionMs: 60_000,
    });
    const run = await idem(
      'inspect',
      'abc',
      '--scope',
      '["tenant-9","charge"]',
      '--store',
      REDIS_URL,
      '--prefix',
      prefix,
    );
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/status\s+in_progress/);
    expect(run.stdout).toMatch(/owner\s+owner-1/);
    expect(run.stdout).toMatch(/fence\s+1/);
    expect(run.stdout).toMatch(/lease\s+live until \S+ \(\d+\.\d s left\)/);
    expect(run.stdout).toMatch(/retained\s+until/);
    // The same key in another scope is another record.
    expect(
      (
        await idem(
          'inspect',
          'abc',
          '--scope',
          '["tenant-8","charge"]',
          '--store',
          REDIS_URL,
          '--prefix',
          prefix,
        )
      ).code,
    ).toBe(3);
  });
});
