/**
 * redrev adversarial review: bad input at creation and per call (options, clients, odd bytes,
 * outcome sizes). Each must be a clear typed error before anything is written.
 */
import {
  createIdempotency,
  IdemError,
  InvalidInputError,
  OutcomeNotRecordedError,
  OutcomeTooLargeError,
  StoreUnavailableError,
} from '@idem/core';
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRedisStore } from '../src/index.js';
import {
  type RedisServer,
  redisBinariesAvailable,
  startRedisServer,
  stopRedisServer,
} from './redis-servers.js';
import { connectTo, settle, sleep, token } from './redrev-helpers.js';
import { deletePrefix, randomPrefix, rawRecord } from './targets.js';

const SHARED_PORT = Number(new URL(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379').port || 6379);
const LEASE = 30_000;
const RETENTION = 60_000;
const acquireInput = (key: string, owner = token(), fingerprint = 'fp') => ({
  key,
  fingerprint,
  owner,
  leaseMs: LEASE,
  retentionMs: RETENTION,
});

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => undefined,
    (e: unknown) => e,
  );
}

describe('redrev: bad input on the shared Redis (own random prefix)', () => {
  let client: Redis;
  let raw: Redis;
  const prefixes: string[] = [];
  const prefix = () => {
    const p = randomPrefix().replace('idem-test:', 'redrev:');
    prefixes.push(p);
    return p;
  };
  beforeAll(async () => {
    client = await connectTo(SHARED_PORT);
    raw = await connectTo(SHARED_PORT);
  });
  afterAll(async () => {
    for (const p of prefixes) await deletePrefix(raw, p);
    client?.disconnect();
    raw?.disconnect();
  });

  it('invalid options at creation are refused with InvalidInputError', () => {
    const bad: Record<string, unknown>[] = [
      { keyPrefix: 'a{b' },
      { keyPrefix: 'a}b' },
      { keyPrefix: '{' },
      { keyPrefix: 42 },
      { keyPrefix: {} },
      { keyPrefix: '\uD800' },
      { maxOutcomeBytes: 0 },
      { maxOutcomeBytes: -1 },
      { maxOutcomeBytes: 1.5 },
      { maxOutcomeBytes: Number.NaN },
      { maxOutcomeBytes: '100' },
      { fenceMemoryMs: -1 },
      { fenceMemoryMs: Number.NaN },
      { fenceMemoryMs: Number.POSITIVE_INFINITY },
      { fenceMemoryMs: 2 ** 60 },
      { fenceMemoryMs: '1000' },
      { waitForReplicas: { replicas: -1, timeoutMs: 100 } },
      { waitForReplicas: { replicas: 1, timeoutMs: -5 } },
    ];
    for (const options of bad) {
      let error: unknown;
      try {
        createRedisStore({ client, ...options } as never);
      } catch (e) {
        error = e;
      }
      expect(error, JSON.stringify(options)).toBeInstanceOf(InvalidInputError);
    }
    for (const notAClient of [undefined, null, {}, 'redis://x', { sendCommand() {} }]) {
      expect(() => createRedisStore({ client: notAClient as never })).toThrow(InvalidInputError);
    }
  });

  // FINDING (LOW; fixed: checkClient in src/input-checks.ts refuses at creation anything that is
  // not a real Redis/Cluster: a pipeline (`isPipeline`), no boolean `isCluster`, no `status`,
  // `sendCommand`, `defineCommand` or `options`): createRedisStore accepts any object with a
  // `defineCommand` function as its client: an ioredis Pipeline (`redis.pipeline()`,
  // `redis.multi()`) or a stub. Every call then fails as an outage (StoreUnavailableError "Redis
  // returned a malformed number: undefined" / "Cannot read properties of undefined (reading
  // 'apply')"), i.e. a 503 forever that looks like a Redis problem, instead of a configuration
  // error at creation. Reproduce: createRedisStore({ client: redis.pipeline() }) then
  // store.acquire(...). Fix: at creation require a real client (`client.isCluster` boolean, `typeof
  // client.sendCommand === 'function'`, `client.options` object, no `exec`), else
  // InvalidInputError.
  it('a Pipeline or a stub with defineCommand is refused at creation (InvalidInputError)', () => {
    expect(() => createRedisStore({ client: raw.pipeline() as never })).toThrow(InvalidInputError);
    expect(() => createRedisStore({ client: raw.multi() as never })).toThrow(InvalidInputError);
    expect(() => createRedisStore({ client: { defineCommand() {} } as never })).toThrow(
      InvalidInputError,
    );
  });

  // FINDING (LOW; fixed: checkClient in src/input-checks.ts refuses `options.stringNumbers` and a
  // Cluster's `redisOptions.stringNumbers` at creation with InvalidInputError): a client built with
  // ioredis's `stringNumbers: true` is accepted. Its integer replies come back as strings, so every
  // acquire script RUNS in Redis (the record is written, the key is held for a whole lease) and
  // then the store throws StoreUnavailableError("Redis returned a malformed number: 1"): a
  // half-written record and a permanent 503 that looks like an outage. Reproduce: new Redis({
  // stringNumbers: true }), createRedisStore({ client }).acquire(...), then GET the record key: it
  // is there. Fix: refuse `client.options.stringNumbers === true` (and on a Cluster `redisOptions`)
  // at creation with InvalidInputError, or parse numeric strings in `integer()`.
  it('a client with stringNumbers: true is refused at creation, or works; never a half-written record', async () => {
    const sn = await connectTo(SHARED_PORT, { stringNumbers: true });
    try {
      const p = prefix();
      let store: ReturnType<typeof createRedisStore> | undefined;
      try {
        store = createRedisStore({ client: sn, keyPrefix: p });
      } catch (error) {
        expect(error).toBeInstanceOf(InvalidInputError);
        return;
      }
      const outcome = await rejection(store.acquire(acquireInput('k')));
      if (outcome !== undefined) {
        // Failed: then nothing may have been written.
        expect(await raw.exists(store.redisKey('k'))).toBe(0);
      }
    } finally {
      sn.disconnect();
    }
  });

  // FINDING (LOW; fixed: checkKeyPrefix in src/input-checks.ts caps keyPrefix at 1024 characters,
  // InvalidInputError past it): keyPrefix has no length bound. A 1 MiB prefix is accepted and then
  // every record and every fence key carries it (2 MiB of key names per storage key, silently); a
  // prefix past Redis's proto-max-bulk-len would only fail at the first call. The design says
  // storage keys have a bounded length whatever the input. Reproduce: createRedisStore({ client,
  // keyPrefix: 'x'.repeat(1 << 20) }). Fix: cap keyPrefix (e.g. 256 or 1024 characters) in
  // checkKeyPrefix, InvalidInputError past it.
  it('a huge keyPrefix (1 MiB) is refused at creation', () => {
    expect(() => createRedisStore({ client, keyPrefix: 'x'.repeat(1 << 20) })).toThrow(
      InvalidInputError,
    );
  });

  it('a client in the wrong state (quit, subscriber mode) gives a typed error at once and writes nothing', async () => {
    const p = prefix();
    const ended = await connectTo(SHARED_PORT);
    await ended.quit();
    const sub = await connectTo(SHARED_PORT);
    await sub.subscribe('redrev-chan');
    try {
      for (const c of [ended, sub]) {
        const store = createRedisStore({ client: c, keyPrefix: p });
        const r = await settle(() => store.acquire(acquireInput('k')), 3_000);
        expect(r.hung).toBeFalsy();
        expect(r.error).toBeInstanceOf(StoreUnavailableError);
        expect(r.ms).toBeLessThan(500);
      }
      expect(await raw.keys(`${p}*`)).toEqual([]);
    } finally {
      sub.disconnect();
    }
  });

  it('keys, owners and fingerprints with odd bytes round-trip exactly and stay distinct', async () => {
    const store = createRedisStore({ client, keyPrefix: prefix() });
    const odd = [
      'a\r\nb',
      '\0',
      'a\0b',
      '*3\r\n$3\r\nDEL\r\n',
      'é',
      'e\u0301',
      '😀',
      ' ',
      '\u2028',
      // The longest key and owner the store takes (storesmall32: over 1024 code units is refused,
      // see input-bounds.test.ts).
      'x'.repeat(1_020),
    ];
    const owners = new Map<string, string>();
    for (const [i, key] of odd.entries()) {
      const owner = `${odd[(i + 1) % odd.length]}${i}`;
      const fingerprint = odd[(i + 2) % odd.length] as string;
      owners.set(key, owner);
      expect(await store.acquire(acquireInput(key, owner, fingerprint))).toMatchObject({
        kind: 'acquired',
        fence: 1,
      });
      const record = await rawRecord(raw, store.redisKey(key));
      expect(record).toMatchObject({ status: 'in_progress', owner, fingerprint, fence: 1 });
      // Another owner finds exactly these bytes; an owner that is a prefix of it is not it.
      const found = await store.acquire(acquireInput(key, owner.slice(0, -1) || 'z', fingerprint));
      expect(found.kind).toBe('found');
      if (found.kind === 'found') expect(found.record).toMatchObject({ owner, fingerprint });
      expect(
        await store.complete({
          key,
          owner: `${owner}\0`,
          outcome: new Uint8Array([1]),
          retentionMs: RETENTION,
        }),
      ).toEqual({ ok: false, reason: 'not_owner' });
    }
    // NFC and NFD spellings are two keys (bytes, not text equivalence).
    expect((await store.get('é'))?.owner).toBe(owners.get('é'));
    expect((await store.get('e\u0301'))?.owner).toBe(owners.get('e\u0301'));
    for (const key of odd) {
      const outcome = new Uint8Array(Buffer.from(`${key}\r\n\0\xff`, 'latin1'));
      expect(
        await store.complete({
          key,
          owner: owners.get(key) as string,
          outcome,
          retentionMs: RETENTION,
        }),
      ).toEqual({ ok: true });
      expect(Buffer.from((await store.get(key))?.outcome as Uint8Array)).toEqual(
        Buffer.from(outcome),
      );
    }
  });

  it('bad per-call input is InvalidInputError and writes nothing', async () => {
    const p = prefix();
    const store = createRedisStore({ client, keyPrefix: p });
    const bad = [
      { ...acquireInput('k'), key: '' },
      { ...acquireInput('k'), key: 'a{b' },
      { ...acquireInput('k'), key: 'a}b' },
      { ...acquireInput('k'), key: 7 },
      { ...acquireInput('k'), owner: '' },
      { ...acquireInput('k'), owner: '\uDC00' },
      { ...acquireInput('k'), owner: 5 },
      { ...acquireInput('k'), fingerprint: '\uD800x' },
      { ...acquireInput('k'), fingerprint: null },
      { ...acquireInput('k'), leaseMs: -1 },
      { ...acquireInput('k'), leaseMs: Number.NaN },
      { ...acquireInput('k'), retentionMs: Number.POSITIVE_INFINITY },
      { ...acquireInput('k'), retentionMs: 2 ** 54 },
    ];
    for (const input of bad) {
      const error = await rejection(store.acquire(input as never));
      expect(error, JSON.stringify(input)).toBeInstanceOf(InvalidInputError);
    }
    expect(await raw.keys(`${p}*`)).toEqual([]);
  });

  it('outcome at the maximum is recorded; one byte above is OutcomeTooLargeError with the record untouched; execute then never runs twice', async () => {
    const max = 64 * 1024;
    const store = createRedisStore({ client, keyPrefix: prefix(), maxOutcomeBytes: max });
    const owner = token();
    await store.acquire(acquireInput('big', owner));
    const before = await rawRecord(raw, store.redisKey('big'));
    const over = await rejection(
      store.complete({
        key: 'big',
        owner,
        outcome: new Uint8Array(max + 1),
        retentionMs: RETENTION,
      }),
    );
    expect(over).toBeInstanceOf(OutcomeTooLargeError);
    expect(await rawRecord(raw, store.redisKey('big'))).toEqual(before);
    const exact = new Uint8Array(max).map((_, i) => i % 251);
    expect(
      await store.complete({ key: 'big', owner, outcome: exact, retentionMs: RETENTION }),
    ).toEqual({ ok: true });
    expect(Buffer.from((await store.get('big'))?.outcome as Uint8Array)).toEqual(
      Buffer.from(exact),
    );

    // Through the engine: a result that does not fit is never handed to a retry.
    const idem = createIdempotency<string>({ store, heartbeatMs: false });
    let runs = 0;
    const huge = 'y'.repeat(max + 10);
    const first = await rejection(
      idem.execute({ key: 'too-big', scope: 's' }, async () => {
        runs++;
        return huge;
      }),
    );
    expect(first).toBeInstanceOf(IdemError);
    const retry = await rejection(
      idem.execute({ key: 'too-big', scope: 's' }, async () => {
        runs++;
        return 'again';
      }),
    );
    expect(retry).toBeInstanceOf(OutcomeNotRecordedError);
    expect(runs).toBe(1);
  });
});

// Throws (fails the file) when redis-server or redis-cli is missing: these tests never skip.
redisBinariesAvailable();

describe('redrev: an outcome Redis refuses (proto-max-bulk-len)', () => {
  let server: RedisServer;
  let client: Redis;
  beforeAll(async () => {
    // The smallest limit Redis takes; the store's default maxOutcomeBytes (16 MiB) is above it.
    server = await startRedisServer(['--proto-max-bulk-len', '1mb']);
    client = await connectTo(server.port);
  });
  afterAll(async () => {
    client?.disconnect();
    if (server) await stopRedisServer(server);
  });

  // FINDING (MEDIUM; fixed: src/bulk-limit.ts. createRedisStore refuses a maxOutcomeBytes above 512
  // MiB - 64 KiB; complete reads the server's proto-max-bulk-len once (CONFIG GET, only for an
  // outcome above 960 KiB; a server refusing CONFIG is taken to have the default) and throws
  // OutcomeTooLargeError before sending one that does not fit; a completion Redis still refuses
  // with "Protocol error: invalid bulk length" is OutcomeTooLargeError, never an outage. Core then
  // records its not-recorded marker): the store checks an outcome only against its own
  // maxOutcomeBytes, which nothing ties to what Redis accepts: creation takes any maxOutcomeBytes
  // (even 1 TiB, above the 512 MiB proto-max-bulk-len the README mentions), and a server with a
  // lower proto-max-bulk-len refuses a smaller one. Redis answers "Protocol error: invalid bulk
  // length" and CLOSES the connection, which the store reports as StoreUnavailableError, so the
  // engine retries the completion (every lease/10, until maxHoldMs), each retry dropping the
  // client's shared connection (every other caller's in-flight calls are cut, new ones fail at once
  // while it reconnects), and once the hold passes the lease runs out and the next retry EXECUTES
  // THE OPERATION AGAIN (DESIGN: an outcome that does not fit must never hand the key to a retry).
  // Reproduce: redis-server --proto-max-bulk-len 1mb, default store, execute() returning 1.5 MB,
  // short lease/maxHold, retry after the lease: runs = 2. Fix: refuse maxOutcomeBytes above 512 MiB
  // at creation, and classify an "invalid bulk length" refusal of a completion as
  // OutcomeTooLargeError (so the engine writes its not-recorded marker), or read proto-max-bulk-len
  // once and cap maxOutcomeBytes with it.
  it('an outcome above the server limit is a typed too-large error, and the operation never runs twice', async () => {
    const store = createRedisStore({ client, keyPrefix: 'redrev-bulk:' });
    const idem = createIdempotency<string>({
      store,
      leaseMs: 600,
      maxHoldMs: 2_000,
      retentionMs: 60_000,
    });
    let runs = 0;
    let drops = 0;
    client.on('close', () => drops++);
    const big = 'z'.repeat(1_500_000);
    const first = await settle(
      () =>
        idem.execute({ key: 'k', scope: 's' }, async () => {
          runs++;
          return big;
        }),
      15_000,
    );
    expect(first.hung).toBeFalsy();
    await sleep(800);
    const second = await settle(
      () =>
        idem.execute({ key: 'k', scope: 's' }, async () => {
          runs++;
          return 'small';
        }),
      15_000,
    );
    console.log(
      `[redrev] bulk: first ${String((first.error as Error)?.name)}, second ${second.ok ? 'ran' : String((second.error as Error)?.name)}, connection drops ${drops}`,
    );
    expect(runs).toBe(1);
    expect(first.error).toBeInstanceOf(OutcomeTooLargeError);
    expect(drops).toBe(0);
  });

  it('maxOutcomeBytes above what any Redis accepts (512 MiB) is refused at creation', () => {
    expect(() => createRedisStore({ client, maxOutcomeBytes: 2 ** 40 })).toThrow(InvalidInputError);
  });
});
