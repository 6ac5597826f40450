// rev32g review of amqp32b's local-run map (Disposition.localRun): an entry is made only for a
// run whose handler started, and it leaves when that run ends, whatever the way (a handler that
// throws synchronously, a completion write that fails); a duplicate told in_progress by a holder
// that is not a local run gets no stale localRun; a held duplicate never runs beside the local run.
import { createRedisStore } from '@idem/store-redis';
import { expect, it } from 'vitest';
import { messageProcessor } from '../src/index.js';
import { redisBed } from './brokers.js';

const bed = redisBed('rev32g-local');
let n = 0;
const createMemoryStore = () =>
  createRedisStore({ client: bed.redis, keyPrefix: `${bed.prefix}${n++}:` });

type Msg = { id: string };
const broker = {
  defaultKey: (m: Msg) => m.id,
  body: () => new Uint8Array(),
  defaultScope: () => ['rev32g'],
};

it('a run that throws synchronously or whose record write fails leaves no localRun behind', async () => {
  const store = createMemoryStore();
  let failComplete = false;
  const flaky = new Proxy(store, {
    get(target, name, receiver) {
      const value = Reflect.get(target, name, receiver);
      if (name === 'complete' && typeof value === 'function')
        return (...args: unknown[]) =>
          failComplete
            ? Promise.reject(new Error('write failed'))
            : Reflect.apply(value, target, args);
      return value;
    },
  });
  const processor = messageProcessor<Msg, string>(
    {
      store: flaky as typeof store,
      payload: false,
      retryDelayMs: 0,
      handler: ((m: Msg) => {
        if (m.id === 'sync') throw new Error('sync throw');
        return Promise.resolve('ok');
      }) as never,
    },
    broker,
  );
  const first = await processor.process({ id: 'sync' });
  expect(first).toMatchObject({ action: 'retry', status: 'failed' });
  failComplete = true;
  const second = await processor.process({ id: 'write' });
  expect(second.action).toBe('retry');
  failComplete = false;
  // An outside holder of each key (not a run of this processor): in_progress, no localRun.
  for (const id of ['sync', 'write']) {
    const held = await processor.engine.begin({ key: id, scope: ['rev32g'] }).catch((e) => e);
    const dup = await processor.process({ id });
    expect([id, dup.status]).toEqual([id, 'in_progress']);
    expect((dup as { localRun?: unknown }).localRun).toBeUndefined();
    void held;
  }
  await processor.close();
});

it('a duplicate held behind a failing local run is told when it ends and never runs beside it', async () => {
  const store = createMemoryStore();
  let running = 0;
  let most = 0;
  let runs = 0;
  let release: () => void = () => {};
  const gate = new Promise<void>((resolve) => {
    release = resolve;
  });
  const processor = messageProcessor<Msg, string>(
    {
      store,
      retryDelayMs: 0,
      handler: async () => {
        runs++;
        running++;
        most = Math.max(most, running);
        try {
          if (runs === 1) {
            await gate;
            throw new Error('first run fails');
          }
          return 'ok';
        } finally {
          running--;
        }
      },
    },
    broker,
  );
  const a = processor.process({ id: 'k' });
  for (let i = 0; i < 100 && runs === 0; i++) await new Promise((r) => setTimeout(r, 5));
  const b = await processor.process({ id: 'k' });
  expect(b.status).toBe('in_progress');
  const localRun = (b as { localRun?: Promise<unknown> }).localRun;
  expect(localRun).toBeDefined();
  release();
  expect(await localRun).toMatchObject({ action: 'retry', status: 'failed' });
  expect(await a).toMatchObject({ action: 'retry', status: 'failed' });
  // Asked again after the run ended: it runs once more, alone.
  expect(await processor.process({ id: 'k' })).toMatchObject({
    action: 'ack',
    status: 'processed',
  });
  expect(await processor.process({ id: 'k' })).toMatchObject({ action: 'ack', status: 'replayed' });
  expect([runs, most]).toEqual([2, 1]);
  await processor.close();
});
