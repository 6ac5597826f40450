import {
  bytesSerializer,
  createIdempotency,
  type IdempotencyStore,
  type OutcomeSerializer,
  StoreFullError,
  SYNC_FORM,
  syncFormOf,
} from '@idem/core';
import { describe, expect, it } from 'vitest';
import { createMemoryStore } from '../src/index.js';

// Review of wt/corecpu: the reused encoding buffer (core) and the reused replay view
// (store-memory) must never let one key's bytes, or a later value, show through.
const same = (key: string, n = 40) => ({ key, data: key.repeat(n) });
const never = async (): Promise<never> => {
  throw new Error('ran again');
};
const tick = () => new Promise((r) => setTimeout(r, 0));

describe('review: reused buffers', () => {
  it('many executions in flight across awaits record and replay each its own value', async () => {
    const store = createMemoryStore();
    const idem = createIdempotency({ store });
    const keys = Array.from({ length: 300 }, (_, i) => `k-${String(i).padStart(4, '0')}`);
    const first = await Promise.all(
      keys.map((key, i) =>
        idem.execute({ key }, async () => {
          if (i % 3 === 0) await tick();
          else if (i % 3 === 1) await Promise.resolve();
          return same(key);
        }),
      ),
    );
    first.forEach((r, i) => {
      expect(r).toEqual({ value: same(keys[i]!), replayed: false });
    });
    const again = await Promise.all([...keys].reverse().map((key) => idem.execute({ key }, never)));
    again.forEach((r, i) => {
      expect(r.value).toEqual(same(keys[keys.length - 1 - i]!));
    });
    await store.close();
  });

  it('values of every kind round-trip (non-Latin-1, lone surrogates, >64 KiB, empty, undefined)', async () => {
    const store = createMemoryStore();
    const idem = createIdempotency<unknown>({ store });
    const values: unknown[] = [
      '',
      null,
      0,
      undefined,
      [],
      {},
      'é€😀\u00ff\u0100',
      '\ud800x\udfff',
      'x'.repeat(65_536),
      'é'.repeat(40_000),
      '€'.repeat(22_000),
      { big: 'y'.repeat(300_000) },
      'small again',
    ];
    for (const [i, v] of values.entries()) await idem.execute({ key: `v${i}` }, async () => v);
    for (let round = 0; round < 2; round++)
      for (const [i, v] of values.entries()) {
        const r = await idem.execute({ key: `v${i}` }, never);
        expect(r.replayed).toBe(true);
        expect(r.value).toEqual(
          JSON.parse(JSON.stringify(v) ?? 'null') ?? (v === undefined ? undefined : null),
        );
      }
    await store.close();
  });

  it('a replayed Uint8Array (bytesSerializer) and a begin() body do not change after later replays', async () => {
    const store = createMemoryStore();
    const idem = createIdempotency<Uint8Array>({ store, serializer: bytesSerializer });
    const bytesOf = (n: number) => new Uint8Array(64).fill(n);
    for (let i = 0; i < 8; i++) await idem.execute({ key: `b${i}` }, async () => bytesOf(i));
    const held = (await idem.execute({ key: 'b1' }, never)).value;
    const begun = await idem.begin({ key: 'b2' });
    if (begun.kind !== 'replay') throw new Error('expected replay');
    for (let i = 0; i < 8; i++) await idem.execute({ key: `b${i}` }, never);
    for (let i = 0; i < 8; i++) await idem.begin({ key: `b${i}` });
    expect([...held]).toEqual([...bytesOf(1)]);
    expect(held.buffer.byteLength).toBe(64); // its own memory, not a view of a reused buffer
    expect([...begun.outcome.body]).toEqual(
      [...new TextEncoder().encode('')].concat([...bytesOf(2)]),
    );
    await store.close();
  });

  it('a custom serializer that keeps the body gets its own bytes', async () => {
    const store = createMemoryStore();
    const raw: OutcomeSerializer<Uint8Array> = {
      serialize: (v) => ({ meta: {}, body: v }),
      deserialize: (o) => o.body,
    };
    const idem = createIdempotency<Uint8Array>({ store, serializer: raw });
    await idem.execute({ key: 'a' }, async () => new Uint8Array(100).fill(1));
    await idem.execute({ key: 'b' }, async () => new Uint8Array(100).fill(2));
    const a = (await idem.execute({ key: 'a' }, never)).value;
    await idem.execute({ key: 'b' }, never);
    expect(a.every((x) => x === 1)).toBe(true);
    await store.close();
  });

  it('re-entrant execute from inside a toJSON (while encoding) and from an event listener', async () => {
    const store = createMemoryStore();
    const quiet = createIdempotency({ store });
    await quiet.execute({ key: 'other' }, async () => same('other'));
    const nested: Promise<unknown>[] = [];
    let completes = 0;
    const listened = createIdempotency({
      store,
      onEvent: (e) => {
        if (e.type === 'store_call' && e.method === 'complete')
          nested.push(quiet.execute({ key: `n-${completes++}` }, async () => same('nnnn')));
        if (e.type === 'store_call') nested.push(quiet.execute({ key: 'other' }, never));
      },
    });
    const value = {
      toJSON() {
        nested.push(quiet.execute({ key: 'inner' }, async () => same('iiii')));
        return same('outr');
      },
    };
    await listened.execute({ key: 'outer' }, async () => value);
    await Promise.all(nested);
    expect((await quiet.execute({ key: 'outer' }, never)).value).toEqual(same('outr'));
    expect((await quiet.execute({ key: 'inner' }, never)).value).toEqual(same('iiii'));
    expect((await quiet.execute({ key: 'n-0' }, never)).value).toEqual(same('nnnn'));
    await store.close();
  });

  // An ASCII value is completed through the store's Latin-1 outcome form (a string, no bytes)
  // where JSON.stringify's text is one byte a character (V8 12+; on V8 11 the bytes way);
  // a non-ASCII one as bytes in the reused buffer (`finalWrite`). Both retry with bytes of their own.
  it.each([
    ['rrrr', Number.parseInt(process.versions.v8, 10) >= 12 ? /completeLatin1/ : /finalWrite/],
    ['rrr\u00e9', /finalWrite/],
  ] as const)(
    'a complete that fails once (store clock throws) is retried with its own bytes while others encode (%s)',
    async (data, path) => {
      let failNext = false;
      let failedIn = '';
      const store = createMemoryStore({
        clock: {
          now: () => {
            if (failNext) {
              failNext = false;
              failedIn = new Error().stack ?? '';
              throw new Error('clock down (injected)');
            }
            return Date.now();
          },
        },
      });
      const idem = createIdempotency({ store, leaseMs: 2_000, completionWaitMs: 5_000 });
      const first = idem.execute({ key: 'retried' }, async () => {
        failNext = true; // the next store call is this execution's complete
        return same(data);
      });
      // Others encode into the reused buffer while the retry waits.
      const others = Array.from({ length: 20 }, (_, i) =>
        idem.execute({ key: `o${i}` }, async () => {
          await tick();
          return same('oooo');
        }),
      );
      await Promise.all([first.catch(() => {}), ...others]);
      await idem.drain();
      expect(failedIn).toMatch(path);
      expect((await idem.execute({ key: 'retried' }, never)).value).toEqual(same(data));
      await store.close();
    },
  );

  it('StoreFull on complete leaves the next executions whole', async () => {
    const store = createMemoryStore({ maxBytes: 20_000, maxOutcomeBytes: 20_000 });
    const idem = createIdempotency({ store });
    await idem.execute({ key: 'fill' }, async () => ({ d: 'f'.repeat(15_000) }));
    const full = await idem
      .execute({ key: 'big' }, async () => ({ d: 'b'.repeat(8_000) }))
      .catch((e) => e);
    expect(full).toBeInstanceOf(StoreFullError);
    const small = createMemoryStore();
    const idem2 = createIdempotency({ store: small });
    await idem2.execute({ key: 's' }, async () => same('ssss'));
    expect((await idem2.execute({ key: 's' }, never)).value).toEqual(same('ssss'));
    await store.close();
    await small.close();
  });

  it('a store spread, proxied, or made from a class over the memory store replays each its own key', async () => {
    const memory = createMemoryStore();
    class Sub {
      constructor() {
        Object.assign(this, memory);
      }
    }
    const stores: IdempotencyStore[] = [
      { ...memory },
      new Proxy(memory, {}),
      new Sub() as unknown as IdempotencyStore,
      Object.create(memory),
    ];
    for (const [i, store] of stores.entries()) {
      const idem = createIdempotency({ store });
      for (const k of ['aa', 'bb', 'cc'])
        await idem.execute({ key: `${i}${k}` }, async () => same(`${i}${k}`));
      const rs = await Promise.all(
        ['aa', 'bb', 'cc', 'aa'].map((k) => idem.execute({ key: `${i}${k}` }, never)),
      );
      expect(rs.map((r) => r.value)).toEqual(['aa', 'bb', 'cc', 'aa'].map((k) => same(`${i}${k}`)));
    }
    await memory.close();
  });

  it("a wrapper that swaps the acquire's SYNC_FORM in place is still called (the view form bypasses it)", async () => {
    const memory = createMemoryStore();
    const acquire = syncFormOf(memory.acquire)!;
    const keys: string[] = [];
    // Fault injection / tracing / key rewriting done on the documented SYNC_FORM, in place.
    (memory.acquire as unknown as Record<symbol, unknown>)[SYNC_FORM] = (
      input: Parameters<typeof acquire>[0],
    ) => {
      keys.push(input.key);
      return acquire(input);
    };
    const idem = createIdempotency({ store: memory });
    await idem.execute({ key: 'a' }, async () => same('aaaa'));
    await idem.execute({ key: 'a' }, never);
    // On main both calls go through the replaced form; on wt/corecpu neither does.
    expect(keys.length).toBe(2);
    await memory.close();
  });

  it("a wrapper that swaps the complete's SYNC_FORM in place and keeps its input sees its bytes overwritten", async () => {
    const memory = createMemoryStore();
    const complete = syncFormOf(memory.complete)!;
    const kept: Uint8Array[] = [];
    (memory.complete as unknown as Record<symbol, unknown>)[SYNC_FORM] = (
      input: Parameters<typeof complete>[0],
    ) => {
      kept.push(input.outcome); // a spy, an audit log, a write-behind queue
      return complete(input);
    };
    const idem = createIdempotency({ store: memory });
    await idem.execute({ key: 'a' }, async () => same('aaaa'));
    const before = new TextDecoder().decode(kept[0]);
    await idem.execute({ key: 'b' }, async () => same('bbbb'));
    expect(before).toContain('aaaa');
    // copiesInput is the original form's promise, still claimed for the replacement.
    expect(new TextDecoder().decode(kept[0])).toBe(before);
    await memory.close();
  });

  it('held outcomes round-trip every byte value 0-255 through the view (execute) and the copy (begin)', async () => {
    const store = createMemoryStore();
    const idem = createIdempotency<Uint8Array>({ store, serializer: bytesSerializer });
    const all = new Uint8Array(512).map((_, i) => (i * 131) & 0xff);
    const tail = new Uint8Array(256).map((_, i) => 255 - i);
    await idem.execute({ key: 'all' }, async () => all);
    await idem.execute({ key: 'tail' }, async () => tail);
    for (let round = 0; round < 2; round++) {
      expect((await idem.execute({ key: 'all' }, never)).value).toEqual(all);
      expect((await idem.execute({ key: 'tail' }, never)).value).toEqual(tail);
      const begun = await idem.begin({ key: 'all' });
      if (begun.kind !== 'replay') throw new Error('expected replay');
      expect(begun.outcome.body).toEqual(all);
    }
    await store.close();
  });
});
