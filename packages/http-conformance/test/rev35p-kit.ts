/**
 * rev35p: adversarial review of wt/perf35b (merged as 51ae77dd). The recorder's `settle` no
 * longer makes a promise when the store records at once, the handler takes `beginAtOnce`'s
 * answer as it is, Express sends replays through `sendDecisionAtOnce`. Imported by each
 * adapter's `rev35p-review.test.ts` (real servers over loopback): failing completes of every
 * kind never crash the process (no unhandled rejection, no uncaught exception) and never let
 * the held end out; a retry sent as the first answer ends is its replay; a released answer
 * goes before its retry; the route starts after the acquisition returned; stores that answer
 * sometimes at once, sometimes later (and real Redis) keep one run a key.
 */
import { request } from 'node:http';
import {
  answersSynchronously,
  type IdempotencyStore,
  OutcomeTooLargeError,
  StoreFullError,
  syncFormOf,
} from '@idem/core';
import { createMemoryStore } from '@idem/store-memory';
import { createRedisStore } from '@idem/store-redis';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';

const crashes: unknown[] = [];
const onCrash = (error: unknown) => crashes.push(error);
beforeAll(() => {
  process.on('unhandledRejection', onCrash);
  process.on('uncaughtException', onCrash);
});
afterAll(() => {
  process.off('unhandledRejection', onCrash);
  process.off('uncaughtException', onCrash);
});

type Answer = { status: number; replayed: string | undefined; body: string } | { error: string };

function post(port: number, path: string, key: string): Promise<Answer> {
  return new Promise((resolve) => {
    const headers = { 'content-type': 'application/json', 'idempotency-key': key };
    const req = request({ port, host: '127.0.0.1', path, method: 'POST', headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', (e) => resolve({ error: e.message }));
      res.on('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          replayed: res.headers['idempotent-replayed'] as string | undefined,
          body: Buffer.concat(chunks).toString(),
        }),
      );
    });
    req.on('error', (e) => resolve({ error: e.message }));
    req.setTimeout(5_000, () => req.destroy(new Error('timeout')));
    req.end('{"n":1}');
  });
}

/** The route's answer for a key: what `serve` hands the adapter's app. */
export type Rev35pAnswer = (key: string) => { status: number; body: string };

/**
 * An adapter's server: `idempotency` over `store` with `options` (scope 'global' and these
 * added) before POST /r, whose handler sends what `answer` gives for its `Idempotency-Key`;
 * and POST /plain answering 200 without it.
 */
export type Rev35pServe = (
  store: IdempotencyStore,
  options: Record<string, unknown>,
  answer: Rev35pAnswer,
) => Promise<{ port: number; close(): Promise<void> }>;

/** The attacks, for the adapter whose server `serveWith` makes. */
export function rev35pSuite(serveWith: Rev35pServe): void {
  const closers: (() => Promise<void>)[] = [];
  afterEach(async () => {
    await Promise.all(closers.splice(0).map((close) => close()));
  });

  /** An app over `store`, whose route answers `size` bytes (201) and counts its runs by key. */
  async function serve(
    store: IdempotencyStore,
    options: {
      size?: number;
      status?: number;
      maxOutcomeBytes?: number;
      completionWaitMs?: number;
      outcomeCodec?: unknown;
      onRun?: () => void;
    } = {},
  ) {
    const runs = new Map<string, number>();
    const { port, close } = await serveWith(
      store,
      {
        ...(options.maxOutcomeBytes ? { maxOutcomeBytes: options.maxOutcomeBytes } : {}),
        ...(options.outcomeCodec ? { outcomeCodec: options.outcomeCodec } : {}),
        ...(options.completionWaitMs
          ? { completionWaitMs: options.completionWaitMs, storeTimeoutMs: 200, maxHoldMs: 1_500 }
          : {}),
      },
      (key) => {
        options.onRun?.();
        const n = (runs.get(key) ?? 0) + 1;
        runs.set(key, n);
        return {
          status: options.status ?? 201,
          body: `${key}:${n}:${'x'.repeat(options.size ?? 4)}`,
        };
      },
    );
    closers.push(close);
    return { port, runs };
  }

  /** The memory store with its `complete` replaced by `complete` (a sync form when `sync`). */
  function withComplete(
    make: (inner: (input: never) => unknown) => (input: never) => unknown,
    sync: boolean,
  ): IdempotencyStore {
    const memory = createMemoryStore();
    const inner = syncFormOf(memory.complete) as (input: never) => unknown;
    const complete = make(inner);
    return {
      ...memory,
      complete: sync
        ? (answersSynchronously(complete as never, { copiesInput: true }) as never)
        : (complete as never),
    };
  }

  describe('rev35p review: a complete that fails never crashes the server', () => {
    const failing: [string, () => IdempotencyStore][] = [
      [
        'sync form throws an Error',
        () =>
          withComplete(
            () => () => {
              throw new Error('boom');
            },
            true,
          ),
      ],
      [
        'sync form throws a string',
        () =>
          withComplete(
            () => () => {
              throw 'boom';
            },
            true,
          ),
      ],
      [
        'sync form answers a rejected promise',
        () => withComplete(() => () => Promise.reject(new Error('later')), true),
      ],
      [
        'sync form answers a thenable that rejects',
        () =>
          withComplete(
            () => () => ({
              // biome-ignore lint/suspicious/noThenProperty: a foreign thenable on purpose
              then: (_ok: unknown, no: (e: unknown) => void) => no('t'),
            }),
            true,
          ),
      ],
      [
        'plain complete throws synchronously',
        () =>
          withComplete(
            () => () => {
              throw new Error('sync');
            },
            false,
          ),
      ],
      [
        'sync form answers not ok (taken over)',
        () => withComplete(() => () => ({ ok: false }), true),
      ],
    ];
    for (const [name, make] of failing) {
      it(`${name}: the client gets an answer or a cut, the process keeps serving`, async () => {
        const { port } = await serve(make(), { completionWaitMs: 100 });
        const first = await post(port, '/r', `fail-${name}`);
        // The held end never goes out for an outcome not recorded: the response is cut (as
        // before the merge, checked on 51ae77dd^1).
        expect(first).toEqual({ error: 'socket hang up' });
        // The server still answers: its plain route.
        expect(await post(port, '/plain', `p-${name}`)).toMatchObject({ status: 200 });
        expect(crashes).toEqual([]);
      });
    }

    it('an outcome over maxOutcomeBytes: sent whole, the retry gets the not-recorded problem', async () => {
      const { port, runs } = await serve(createMemoryStore(), {
        size: 5_000,
        maxOutcomeBytes: 1_024,
      });
      const first = await post(port, '/r', 'big');
      expect(first).toMatchObject({ status: 201 });
      const retry = await post(port, '/r', 'big');
      expect(retry).toMatchObject({ status: 500 });
      expect(runs.get('big')).toBe(1);
      expect(crashes).toEqual([]);
    });

    it("the store's own OUTCOME_TOO_LARGE (sync) or STORE_FULL (async): sent whole, the retry gets the problem", async () => {
      for (const [name, refuse] of [
        [
          'too-large',
          () => {
            throw new OutcomeTooLargeError(1, 0);
          },
        ],
        ['full', () => Promise.reject(new StoreFullError('full'))],
      ] as const) {
        const store = withComplete(
          (inner) => (input) => {
            // The marker (a small outcome, no body) lands; the response's outcome is refused.
            const outcome = (input as { outcome: Uint8Array }).outcome;
            return outcome.length > 600 ? refuse() : inner(input);
          },
          true,
        );
        const { port, runs } = await serve(store, { size: 2_000 });
        expect(await post(port, '/r', name)).toMatchObject({ status: 201 });
        expect(await post(port, '/r', name)).toMatchObject({ status: 500 });
        expect(runs.get(name)).toBe(1);
      }
      expect(crashes).toEqual([]);
    });

    it('an outcomeCodec (async seal, async open): recorded, the retry sent as it ends is its replay', async () => {
      let sealed = 0;
      const codec = {
        seal: async (bytes: Uint8Array) => {
          sealed++;
          return new Uint8Array([7, ...bytes]);
        },
        open: async (bytes: Uint8Array) => bytes.subarray(1),
      };
      const { port, runs } = await serve(createMemoryStore(), { size: 3_000, outcomeCodec: codec });
      for (let i = 0; i < 5; i++) {
        const first = await post(port, '/r', `codec-${i}`);
        const retry = await post(port, '/r', `codec-${i}`);
        expect(first).toMatchObject({ status: 201, replayed: undefined });
        expect(retry).toMatchObject({ status: 201, replayed: 'true' });
        if ('body' in first && 'body' in retry) expect(retry.body).toBe(first.body);
        expect(runs.get(`codec-${i}`)).toBe(1);
      }
      expect(sealed).toBe(5);
      expect(crashes).toEqual([]);
    });
  });

  describe('rev35p review: ordering on a store that answers at once', () => {
    it('a retry sent the moment the first answer ends is its replay (the record was stored first)', async () => {
      const { port, runs } = await serve(createMemoryStore());
      for (let i = 0; i < 25; i++) {
        const first = await post(port, '/r', `seq-${i}`);
        const retry = await post(port, '/r', `seq-${i}`);
        expect(first).toMatchObject({ status: 201, replayed: undefined });
        expect(retry).toMatchObject({ status: 201, replayed: 'true' });
        if ('body' in first && 'body' in retry) expect(retry.body).toBe(first.body);
      }
      expect([...runs.values()].every((n) => n === 1)).toBe(true);
    });

    it('a released answer (a 503) lets the retry sent as it ends run again, never 409', async () => {
      const { port, runs } = await serve(createMemoryStore(), { status: 503 });
      for (let i = 0; i < 10; i++) {
        const first = await post(port, '/r', `rel-${i}`);
        const retry = await post(port, '/r', `rel-${i}`);
        expect(first).toMatchObject({ status: 503 });
        expect(retry).toMatchObject({ status: 503 });
        expect(runs.get(`rel-${i}`)).toBe(2);
      }
    });

    it('the route starts after the acquisition call returned, never inside it', async () => {
      const memory = createMemoryStore();
      const acquire = syncFormOf(memory.acquire) as (input: never) => unknown;
      let inAcquireTurn = false;
      const store: IdempotencyStore = {
        ...memory,
        acquire: answersSynchronously((input: never) => {
          inAcquireTurn = true;
          queueMicrotask(() => {
            inAcquireTurn = false;
          });
          return acquire(input);
        }) as never,
      };
      let seenInside = 0;
      const { port } = await serve(store, {
        onRun: () => {
          if (inAcquireTurn) seenInside++;
        },
      });
      for (let i = 0; i < 5; i++)
        expect(await post(port, '/r', `turn-${i}`)).toMatchObject({ status: 201 });
      expect(seenInside).toBe(0);
    });

    it('many duplicates at once, on a store alternating sync and async completes: one run a key', async () => {
      let call = 0;
      const store = withComplete(
        (inner) => (input) => {
          call++;
          if (call % 2 === 0) return inner(input);
          const copy = {
            ...(input as object),
            outcome: new Uint8Array((input as { outcome: Uint8Array }).outcome),
          };
          return new Promise((resolve) => setTimeout(() => resolve(inner(copy as never)), 2));
        },
        true,
      );
      const { port, runs } = await serve(store, { size: 20_000 });
      for (let k = 0; k < 6; k++) {
        const key = `dup-${k}`;
        const answers = await Promise.all(Array.from({ length: 8 }, () => post(port, '/r', key)));
        const bodies = new Set<string>();
        for (const a of answers) {
          expect('status' in a && [201, 409].includes(a.status)).toBe(true);
          if ('status' in a && a.status === 201) bodies.add(a.body);
        }
        expect(bodies.size).toBe(1);
        const late = await post(port, '/r', key);
        expect(late).toMatchObject({ status: 201, replayed: 'true' });
        if ('body' in late) expect(bodies.has(late.body)).toBe(true);
        expect(runs.get(key)).toBe(1);
      }
      expect(crashes).toEqual([]);
    });
  });

  describe('rev35p review: real Redis', () => {
    it('first executions, replays and duplicates on Redis (own key prefix)', async () => {
      const client = new Redis('redis://127.0.0.1:6379', {
        lazyConnect: true,
        maxRetriesPerRequest: 1,
      });
      await client.connect();
      const prefix = `rev35p-${process.pid}-${Date.now()}:`;
      try {
        const { port, runs } = await serve(createRedisStore({ client, keyPrefix: prefix }), {
          size: 3_000,
        });
        for (let k = 0; k < 4; k++) {
          const key = `redis-${k}`;
          const answers = await Promise.all(Array.from({ length: 4 }, () => post(port, '/r', key)));
          for (const a of answers)
            expect('status' in a && [201, 409].includes(a.status)).toBe(true);
          const late = await post(port, '/r', key);
          expect(late).toMatchObject({ status: 201, replayed: 'true' });
          expect(runs.get(key)).toBe(1);
        }
      } finally {
        const keys = await client.keys(`${prefix}*`);
        if (keys.length > 0) await client.del(...keys);
        client.disconnect();
      }
      expect(crashes).toEqual([]);
    });
  });
}
