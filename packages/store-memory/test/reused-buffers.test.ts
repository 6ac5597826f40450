import {
  answersSynchronously,
  type CompleteInput,
  createIdempotency,
  type IdemEvent,
  type IdempotencyStore,
  type OwnerWriteResult,
  syncFormOf,
} from '@idem/core';
import { describe, expect, it } from 'vitest';
import { createMemoryStore } from '../src/index.js';

// The engine reads a replay through the memory store's reused view, and encodes an outcome
// into a buffer it reuses when the store copies it before returning. Neither may ever let
// one key's bytes stand in for another's, whatever runs in between.

/** Values of the same length: a buffer overwritten by another one would still decode. */
const resultOf = (key: string) => ({ key, data: key.repeat(40) });

describe('reused buffers between the engine and the memory store', () => {
  it('concurrent replays of many keys each answer their own key', async () => {
    const store = createMemoryStore();
    const idem = createIdempotency({ store });
    const keys = Array.from({ length: 200 }, (_, i) => `key-${String(i).padStart(3, '0')}`);
    for (const key of keys) await idem.execute({ key }, async () => resultOf(key));
    const answers = await Promise.all(
      [...keys, ...keys, ...keys].map((key) =>
        idem.execute({ key }, async () => {
          throw new Error('ran again');
        }),
      ),
    );
    answers.forEach((answer, i) => {
      expect(answer).toEqual({ value: resultOf(keys[i % keys.length] as string), replayed: true });
    });
    await store.close();
  });

  it('an engine with a listener does not read the view: a listener replaying another key in between changes nothing', async () => {
    const store = createMemoryStore();
    const quiet = createIdempotency({ store });
    await quiet.execute({ key: 'aaaa' }, async () => resultOf('aaaa'));
    await quiet.execute({ key: 'bbbb' }, async () => resultOf('bbbb'));
    const nested: Promise<unknown>[] = [];
    const listened = createIdempotency({
      store,
      // Called with the acquire's timing, before the engine reads what it answered: the
      // quiet engine's replay (which reads the view) runs its acquire right here.
      onEvent: (event: IdemEvent) => {
        if (event.type === 'store_call' && event.method === 'acquire')
          nested.push(quiet.execute({ key: 'bbbb' }, async () => 'ran'));
      },
    });
    const answer = await listened.execute({ key: 'aaaa' }, async () => 'ran');
    expect(answer).toEqual({ value: resultOf('aaaa'), replayed: true });
    await expect(Promise.all(nested)).resolves.toEqual([
      { value: resultOf('bbbb'), replayed: true },
    ]);
    await store.close();
  });

  it("begin hands out a body of its own, not the store's reused view", async () => {
    const store = createMemoryStore();
    const idem = createIdempotency({ store });
    await idem.execute({ key: 'aaaa' }, async () => resultOf('aaaa'));
    await idem.execute({ key: 'bbbb' }, async () => resultOf('bbbb'));
    const begun = await idem.begin({ key: 'aaaa' });
    if (begun.kind !== 'replay') throw new Error('expected a replay');
    const body = new TextDecoder().decode(begun.outcome.body);
    // Another replay rewrites the store's view; the body handed out stays as it was.
    await idem.execute({ key: 'bbbb' }, async () => 'ran');
    expect(new TextDecoder().decode(begun.outcome.body)).toBe(body);
    expect(JSON.parse(body)).toEqual(resultOf('aaaa'));
    // Changing it changes nothing stored.
    begun.outcome.body.fill(0x20);
    await expect(idem.execute({ key: 'aaaa' }, async () => 'ran')).resolves.toEqual({
      value: resultOf('aaaa'),
      replayed: true,
    });
    await store.close();
  });

  it('a final write retried after a failed synchronous complete keeps its own bytes, whatever was encoded meanwhile', async () => {
    const memory = createMemoryStore();
    const complete = syncFormOf(memory.complete) as (input: CompleteInput) => OwnerWriteResult;
    // The first write of 'aaaa' fails, and so does the retry made at once: the next one
    // comes after a pause, when another outcome has been encoded.
    let failures = 2;
    let failing: string | undefined;
    const store: IdempotencyStore = {
      capabilities: memory.capabilities,
      acquire: memory.acquire,
      release: memory.release,
      extend: memory.extend,
      get: memory.get,
      // Copies what it keeps, like the memory store: the engine passes its reused buffer.
      complete: answersSynchronously(
        (input: CompleteInput) => {
          failing ??= input.key;
          if (input.key === failing && failures-- > 0) throw new Error('store down');
          return complete(input);
        },
        { copiesInput: true },
      ),
    };
    const nested: Promise<unknown>[] = [];
    const idem = createIdempotency({ store });
    const listened = createIdempotency({
      store,
      // Runs while the failed write's bytes are still the engine's reused buffer: this
      // completion encodes another outcome of the same length right then.
      onEvent: (event: IdemEvent) => {
        if (event.type === 'store_call' && event.method === 'complete' && !event.ok)
          if (nested.length === 0)
            nested.push(idem.execute({ key: 'bbbb' }, async () => resultOf('bbbb')));
      },
    });
    await expect(listened.execute({ key: 'aaaa' }, async () => resultOf('aaaa'))).resolves.toEqual({
      value: resultOf('aaaa'),
      replayed: false,
    });
    await Promise.all(nested);
    for (const key of ['aaaa', 'bbbb'])
      await expect(idem.execute({ key }, async () => 'ran')).resolves.toEqual({
        value: resultOf(key),
        replayed: true,
      });
    await memory.close();
  });

  it('an outcome encoded while the reused buffer is lent gets bytes of its own', async () => {
    const memory = createMemoryStore();
    const complete = syncFormOf(memory.complete) as (input: CompleteInput) => OwnerWriteResult;
    let failures = 1;
    const store: IdempotencyStore = {
      capabilities: memory.capabilities,
      acquire: memory.acquire,
      release: memory.release,
      extend: memory.extend,
      get: memory.get,
      complete: answersSynchronously(
        (input: CompleteInput) => {
          if (failures-- > 0) throw new Error('store down');
          return complete(input);
        },
        { copiesInput: true },
      ),
    };
    const idem = createIdempotency({ store });
    const other = await idem.begin({ key: 'bbbb' });
    if (other.kind !== 'acquired') throw new Error('expected an acquisition');
    let done: Promise<void> | undefined;
    const listened = createIdempotency({
      store,
      onEvent: (event: IdemEvent) => {
        // The failed complete of 'aaaa' is reported before the engine copied its bytes for
        // the retries: this completion encodes another outcome, of the same length, right then.
        if (event.type === 'store_call' && event.method === 'complete' && !event.ok)
          done = other.execution.complete({
            meta: { kind: 'value', value: { encoding: 'json', undefined: false } },
            body: new TextEncoder().encode(JSON.stringify(resultOf('bbbb'))),
          });
      },
    });
    await listened.execute({ key: 'aaaa' }, async () => resultOf('aaaa'));
    expect(done).toBeDefined();
    await done;
    for (const key of ['aaaa', 'bbbb'])
      await expect(idem.execute({ key }, async () => 'ran')).resolves.toEqual({
        value: resultOf(key),
        replayed: true,
      });
    await memory.close();
  });
});
