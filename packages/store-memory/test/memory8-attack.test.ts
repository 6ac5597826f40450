/**
 * Adversarial review of wt/memory8 (the memory store's Latin-1 acquire form, core's JSON text
 * read straight from it or from the bytes, `execute` answering a replay without a turn of its
 * own). Every replay is compared across: this branch's memory store without a listener (the
 * Latin-1 fast path), with a listener (the bytes fast path), with a serializer that is not the
 * built-in one (the general path) and the Redis store (REDIS_URL, or 127.0.0.1:6379) under a
 * random prefix. (The review also compared main's build of the day; that needs a second build
 * and is not part of the suite.)
 */
import { randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import {
  createIdempotency,
  createOutcomeCodec,
  deriveStorageKey,
  type IdemEvent,
  InProgressError,
  jsonSerializer,
  type OutcomeSerializer,
} from '@idem/core';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMemoryStore } from '../src/index.js';

// biome-ignore lint/suspicious/noExplicitAny: the Redis store's build is loaded untyped
type Any = any;

const requireRedis = createRequire(new URL('../../store-redis/package.json', import.meta.url));
let redisClient: Any;
let createRedisStore: Any;
const prefix = `idem-test:m8a-${randomBytes(6).toString('hex')}:`;

beforeAll(async () => {
  const { Redis } = requireRedis('ioredis');
  redisClient = new Redis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', {
    lazyConnect: true,
    maxRetriesPerRequest: 1,
  });
  await redisClient.connect();
  ({ createRedisStore } = await import('../../store-redis/dist/index.js' as string));
});

afterAll(async () => {
  if (!redisClient) return;
  let cursor = '0';
  let rounds = 0;
  do {
    const [next, keys] = await redisClient.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
    cursor = next;
    if (keys.length) await redisClient.del(...keys);
  } while (cursor !== '0' && ++rounds < 10_000);
  redisClient.disconnect();
});

let keySeq = 0;
const freshKey = () => `m8a-${(keySeq++).toString(36)}-${randomBytes(3).toString('hex')}`;

/** What a call settled with, comparable across builds. */
type Settled =
  | { ok: true; value: unknown; replayed: boolean }
  | { ok: false; name: string; code: unknown; message: string };
async function settle(p: Promise<{ value: unknown; replayed: boolean }>): Promise<Settled> {
  try {
    const r = await p;
    return { ok: true, value: r.value, replayed: r.replayed };
  } catch (e) {
    const err = e as {
      name: string;
      code?: unknown;
      message: string;
      constructor: { name: string };
    };
    return { ok: false, name: err.constructor.name, code: err.code, message: err.message };
  }
}

// Strings meant to hurt: lone surrogates, escapes, non-ASCII, a BOM, the header's bytes.
const nastyString = fc.oneof(
  fc.string({ unit: 'binary', maxLength: 12 }),
  fc.string({ unit: 'grapheme', maxLength: 8 }),
  fc.string({ maxLength: 12 }),
  fc.constantFrom(
    '',
    '\ud800',
    '\udfff',
    'a\ud83dz',
    '\ufeff',
    '\ufeff{"a":1}',
    'IDM\x01',
    'IDN\x01too_large',
    '\u0000\u0000\u0000\u003d',
    '{"kind":"value","value":{"encoding":"json","undefined":false}}',
    '\\u0000',
    '\\ud800',
    'ÿþ',
    '\u0080\u00ff',
    '\u2028\u2029',
    '"',
    '\\',
  ),
);
const nastyNumber = fc.oneof(
  fc.double(),
  fc.integer(),
  fc.constantFrom(
    -0,
    1e308,
    -1e308,
    5e-324,
    2 ** 53 + 1,
    Number.MAX_VALUE,
    1e21,
    123456789012345680000,
  ),
);
const { json: nastyJson } = fc.letrec((tie) => ({
  json: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    fc.constant(null),
    fc.boolean(),
    nastyNumber,
    nastyString,
    fc.array(tie('json'), { maxLength: 4 }),
    fc.dictionary(nastyString, tie('json'), { maxKeys: 4 }),
  ),
}));
const topValue = fc.oneof(
  { weight: 12, arbitrary: nastyJson },
  { weight: 1, arbitrary: fc.constant(undefined) },
);

/** A copy of `jsonSerializer` that is not it: the engine takes the general path with it. */
const notTheBuiltIn: OutcomeSerializer<unknown> = {
  serialize: (v) => jsonSerializer.serialize(v),
  deserialize: (o) => jsonSerializer.deserialize(o),
};

describe('memory8 attack: replays return exactly what was recorded, on every path and store', () => {
  it('arbitrary JSON values: Latin-1 path = bytes path = general path = Redis, twice each', async () => {
    const branchFast = createIdempotency<unknown>({ store: createMemoryStore() });
    const events: IdemEvent[] = [];
    const branchListened = createIdempotency<unknown>({
      store: createMemoryStore(),
      onEvent: (e) => events.push(e),
    });
    const branchGeneral = createIdempotency<unknown>({
      store: createMemoryStore(),
      serializer: notTheBuiltIn,
    });
    const engines: [string, Any][] = [
      ['fast', branchFast],
      ['listened', branchListened],
      ['general', branchGeneral],
      [
        'redis',
        createIdempotency<unknown>({
          store: createRedisStore({ client: redisClient, keyPrefix: prefix }),
        }),
      ],
    ];
    await fc.assert(
      fc.asyncProperty(topValue, async (value) => {
        const expected = value === undefined ? undefined : JSON.parse(JSON.stringify(value));
        for (const [, idem] of engines) {
          const key = freshKey();
          const first = await settle(idem.execute({ key }, async () => value));
          expect(first).toEqual({ ok: true, value, replayed: false });
          for (let i = 0; i < 2; i++) {
            const again = await settle(
              idem.execute({ key }, async () => {
                throw new Error('ran twice');
              }),
            );
            expect(again).toEqual({ ok: true, value: expected, replayed: true });
            if (again.ok && typeof expected === 'number')
              expect(Object.is(again.value, expected)).toBe(true);
          }
        }
      }),
      { numRuns: 250 },
    );
    events.length = 0;
  });

  it('a value recorded by one engine is replayed identically by every other over the same store', async () => {
    await fc.assert(
      fc.asyncProperty(topValue, async (value) => {
        const store = createMemoryStore();
        const writer = createIdempotency<unknown>({ store, serializer: notTheBuiltIn });
        const key = freshKey();
        await writer.execute({ key }, async () => value);
        const readers = [
          createIdempotency<unknown>({ store }),
          createIdempotency<unknown>({ store, onEvent: () => {} }),
          writer,
        ];
        const got = [];
        for (const r of readers) got.push(await settle(r.execute({ key }, async () => 'ran')));
        expect(got[0]).toEqual(got[2]);
        expect(got[1]).toEqual(got[2]);
        expect(got[0]).toMatchObject({ ok: true, replayed: true });
      }),
      { numRuns: 200 },
    );
  });

  it('a replayed value object is never shared: mutating one replay leaves the next intact (all paths)', async () => {
    const makers: (() => Any)[] = [
      () => createIdempotency<unknown>({ store: createMemoryStore() }),
      () => createIdempotency<unknown>({ store: createMemoryStore(), onEvent: () => {} }),
      () => createIdempotency<unknown>({ store: createMemoryStore(), serializer: notTheBuiltIn }),
      () =>
        createIdempotency<unknown>({
          store: createMemoryStore(),
          outcomeCodec: createOutcomeCodec({ compressAboveBytes: 16 }),
        }),
    ];
    for (const make of makers) {
      const idem = make();
      const value = { list: [1, { deep: 'é' }], s: 'x'.repeat(100) };
      await idem.execute({ key: 'shared' }, async () => value);
      value.list.push(99); // the caller's own object after recording
      const a = await idem.execute({ key: 'shared' }, async () => 0);
      a.value.list[1].deep = 'changed';
      a.value.list.push('more');
      a.value.added = true;
      const b = await idem.execute({ key: 'shared' }, async () => 0);
      expect(b.value).toEqual({ list: [1, { deep: 'é' }], s: 'x'.repeat(100) });
      expect(b.value).not.toBe(a.value);
    }
  });

  it('raw recorded bytes (invalid UTF-8, a BOM, bad JSON, truncation): the same answer on every path and store', async () => {
    const metaJson = '{"kind":"value","value":{"encoding":"json","undefined":false}}';
    const head = (meta: string) => {
      const m = Buffer.from(meta, 'utf8');
      const h = Buffer.alloc(8 + m.length);
      h.write('IDM\x01', 0, 'latin1');
      h.writeUInt32BE(m.length, 4);
      m.copy(h, 8);
      return h;
    };
    const body = fc.oneof(
      fc.uint8Array({ maxLength: 40 }),
      fc
        .uint8Array({ maxLength: 40 })
        .map((b) => Buffer.concat([Buffer.from('"'), b, Buffer.from('"')])),
      fc.constantFrom(
        Buffer.from([0xef, 0xbb, 0xbf, 0x31]),
        Buffer.from([0xef, 0xbb, 0xbf]),
        Buffer.from('"\xed\xa0\x80"', 'latin1'),
        Buffer.from('"\xf4\x90\x80\x80"', 'latin1'),
        Buffer.from('"\xc0\xaf\xe0\x80\xbf"', 'latin1'),
        Buffer.from('"\xf0\x9f\x98"', 'latin1'),
        Buffer.from(''),
        Buffer.from('  1  '),
        Buffer.from('[1,'),
      ),
    );
    const meta = fc.constantFrom(
      metaJson,
      '{"value":{"encoding":"json","undefined":false},"kind":"value"}',
      ' {"kind":"value","value":{"encoding":"json","undefined":false}}',
      '{"kind":"value","value":{"encoding":"json","undefined":true}}',
      '{"kind":"value","value":{"encoding":"json"}}',
      '{"kind":"failure","failure":{"name":"E","message":"m"}}',
    );
    await fc.assert(
      fc.asyncProperty(meta, body, fc.boolean(), async (m, b, truncate) => {
        let bytes = new Uint8Array(Buffer.concat([head(m), b]));
        if (truncate) bytes = bytes.subarray(0, Math.max(0, bytes.length - 70));
        const key = freshKey();
        const record = async (store: Any) => {
          const sk = deriveStorageKey(null, key);
          const input = {
            key: sk,
            fingerprint: '',
            owner: 'writer',
            leaseMs: 60_000,
            retentionMs: 60_000,
          };
          expect((await store.acquire(input)).kind).toBe('acquired');
          await store.complete({ key: sk, owner: 'writer', retentionMs: 60_000, outcome: bytes });
        };
        const answers: Settled[] = [];
        const op = async () => 'ran';
        for (const listen of [false, true]) {
          const store = createMemoryStore();
          const idem = createIdempotency<unknown>(
            listen ? { store, onEvent: () => {} } : { store },
          );
          await record(store);
          answers.push(await settle(idem.execute({ key }, op)));
        }
        const redisStore = createRedisStore({ client: redisClient, keyPrefix: prefix });
        await record(redisStore);
        answers.push(
          await settle(createIdempotency<unknown>({ store: redisStore }).execute({ key }, op)),
        );
        // A recorded value or a typed error, never an operation run on a completed key.
        expect(answers[0]).not.toMatchObject({ ok: true, value: 'ran' });
        expect(answers[1]).toEqual(answers[0]);
        expect(answers[2]).toEqual(answers[0]);
      }),
      { numRuns: 400 },
    );
  });
});

describe('memory8 attack: concurrency and ordering without the extra microtask', () => {
  it('a first execution never starts its operation inside the caller’s call; a replay never runs it', async () => {
    const idem = createIdempotency<unknown>({ store: createMemoryStore() });
    let started = 0;
    const p = idem.execute({ key: 'm' }, async () => {
      started++;
      return 'v';
    });
    expect(started).toBe(0);
    await p;
    expect(started).toBe(1);
    const q = idem.execute({ key: 'm' }, async () => {
      started++;
      return 'w';
    });
    expect(started).toBe(1);
    expect(await q).toEqual({ value: 'v', replayed: true });
    expect(started).toBe(1);
  });

  it('replays settle in call order, and a replay never settles before an earlier-issued replay', async () => {
    const idem = createIdempotency<unknown>({ store: createMemoryStore() });
    for (let i = 0; i < 5; i++) await idem.execute({ key: `r${i}` }, async () => i);
    const order: number[] = [];
    await Promise.all(
      [0, 1, 2, 3, 4].map((i) =>
        idem.execute({ key: `r${i}` }, async () => -1).then((r) => order.push(r.value as number)),
      ),
    );
    expect(order).toEqual([0, 1, 2, 3, 4]);
  });

  it('concurrent executes of one key: exactly one runs, the rest InProgress; later ones replay (memory and Redis)', async () => {
    const stores: [string, Any][] = [
      ['memory', createMemoryStore()],
      ['redis', createRedisStore({ client: redisClient, keyPrefix: prefix })],
    ];
    for (const [, store] of stores) {
      const idem = createIdempotency<unknown>({ store, wait: false });
      const key = freshKey();
      let runs = 0;
      let open!: () => void;
      const gate = new Promise<void>((r) => {
        open = r;
      });
      const all = Array.from({ length: 20 }, () =>
        settle(
          idem.execute({ key }, async () => {
            runs++;
            await gate;
            return { who: 'first' };
          }),
        ),
      );
      // Let every call reach the store before the operation is let go.
      for (let i = 0; i < 50 && runs === 0; i++) await new Promise((r) => setTimeout(r, 5));
      open();
      const results = await Promise.all(all);
      expect(runs).toBe(1);
      const ran = results.filter((r) => r.ok && !r.replayed);
      const busy = results.filter((r) => !r.ok && r.name === 'InProgressError');
      const replays = results.filter((r) => r.ok && r.replayed);
      expect(ran.length).toBe(1);
      expect(ran.length + busy.length + replays.length).toBe(20);
      for (const r of replays) expect(r).toMatchObject({ value: { who: 'first' } });
      const later = await idem.execute({ key }, async () => ({ who: 'second' }));
      expect(later).toEqual({ value: { who: 'first' }, replayed: true });
    }
  });

  it('concurrent executes with wait: every waiter replays the one recorded value', async () => {
    const idem = createIdempotency<unknown>({
      store: createMemoryStore(),
      wait: { timeoutMs: 10_000, pollMs: 5 },
    });
    let runs = 0;
    const all = Array.from({ length: 10 }, () =>
      idem.execute({ key: 'w' }, async () => {
        runs++;
        await new Promise((r) => setTimeout(r, 30));
        return ['é', runs];
      }),
    );
    const results = await Promise.all(all);
    expect(runs).toBe(1);
    expect(results.filter((r) => !r.replayed).length).toBe(1);
    for (const r of results) expect(r.value).toEqual(['é', 1]);
    // Waiter replays are distinct objects too.
    (results[1]!.value as Any[]).push('x');
    expect(results[2]!.value).toEqual(['é', 1]);
  });

  it('re-entrancy: an operation that executes its own key gets InProgressError; the outer value is recorded', async () => {
    const idem = createIdempotency<unknown>({ store: createMemoryStore() });
    let inner: Settled | undefined;
    const outer = await idem.execute({ key: 're' }, async () => {
      inner = await settle(idem.execute({ key: 're' }, async () => 'inner'));
      return 'outer';
    });
    expect(outer).toEqual({ value: 'outer', replayed: false });
    expect(inner).toMatchObject({ ok: false, name: 'InProgressError' });
    // After completion, an operation that replays its own (other) key inside works.
    const nested = await idem.execute(
      { key: 're2' },
      async () => (await idem.execute({ key: 're' }, async () => 'x')).value,
    );
    expect(nested.value).toBe('outer');
    expect(InProgressError).toBeDefined();
  });

  it('a listener that calls execute (same key) during the hit event does not disturb the replay', async () => {
    let idem!: ReturnType<typeof createIdempotency<unknown>>;
    const nested: Promise<Settled>[] = [];
    let depth = 0;
    idem = createIdempotency<unknown>({
      store: createMemoryStore(),
      onEvent: (e) => {
        // The hit is emitted inside the execute call (as on main): count before re-entering.
        if (e.type === 'hit' && depth++ < 3)
          nested.push(settle(idem.execute({ key: 'l' }, async () => 'ran')));
      },
    });
    await idem.execute({ key: 'l' }, async () => ({ v: 'é😀' }));
    const r = await idem.execute({ key: 'l' }, async () => 'ran');
    expect(r).toEqual({ value: { v: 'é😀' }, replayed: true });
    for (const n of await Promise.all(nested))
      expect(n).toEqual({ ok: true, value: { v: 'é😀' }, replayed: true });
  });

  it('begin with an aborted signal rejects with its reason', async () => {
    const idem = createIdempotency<unknown>({ store: createMemoryStore() });
    await idem.execute({ key: 'a' }, async () => 1);
    const reason = new Error('stop');
    const b = await settle(idem.begin({ key: 'a' }, { signal: AbortSignal.abort(reason) }) as Any);
    expect(b).toMatchObject({ ok: false, message: 'stop' });
  });
});

describe('memory8 attack: begin options', () => {
  // Review finding (LOW): main threw a TypeError for `begin(request, null)` (it read
  // `null.signal`); null options now mean no options, as undefined does (changeset).
  it('begin(request, null) is begin(request): the key is acquired', async () => {
    const idem = createIdempotency<unknown>({ store: createMemoryStore() });
    const begun = await idem.begin({ key: 'n' }, null as Any);
    if (begun.kind !== 'acquired') throw new Error(`expected acquired, got ${begun.kind}`);
    await expect(idem.begin({ key: 'n' })).rejects.toBeInstanceOf(InProgressError);
    await begun.execution.release();
  });
});
