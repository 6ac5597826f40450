// consumers34: the processor's map of local runs (what a duplicate of a run still running here
// is held on, see Disposition.localRun) under many distinct keys: every key's entry leaves when
// its run ends, so neither the entries nor the runs' promises (held by the duplicates told
// `in_progress`) outlive them. Sized by IDEM_C34_KEYS (100). On the real Redis.
import { createRedisStore } from '@idem/store-redis';
import { expect, it } from 'vitest';
import { settledCount, stillAlive } from '../../../scripts/heap-count.js';
import { messageProcessor } from '../src/index.js';
import { redisBed } from './brokers.js';

const KEYS = Number(process.env.IDEM_C34_KEYS ?? 100);
const bed = redisBed('consumers34-memory');

type Msg = { id: string; body: Uint8Array };

it('many distinct keys, each with a duplicate held on its run: nothing of them is retained', {
  timeout: 60_000,
}, async () => {
  const gates = new Map<string, () => void>();
  const processor = messageProcessor<Msg, string>(
    {
      store: createRedisStore({ client: bed.redis, keyPrefix: bed.prefix }),
      retryDelayMs: 0,
      handler: async (message) => {
        await new Promise<void>((resolve) => gates.set(message.id, resolve));
        return 'ok';
      },
    },
    {
      defaultKey: (m) => m.id,
      body: (m) => m.body,
      defaultScope: () => ['consumers34-memory'],
    },
  );
  const runs: Array<WeakRef<object>> = [];
  const messages: Array<WeakRef<object>> = [];
  let replayed = 0;
  for (let i = 0; i < KEYS; i++) {
    const id = `key-${i}`;
    const first = { id, body: new Uint8Array(1_000) };
    const running = processor.process(first);
    while (!gates.has(id)) await new Promise((resolve) => setImmediate(resolve));
    const duplicate = await processor.process({ id, body: new Uint8Array(1_000) });
    expect(duplicate.status).toBe('in_progress');
    const run = (duplicate as { localRun?: Promise<unknown> }).localRun;
    expect(run).toBeDefined();
    runs.push(new WeakRef(run as object));
    messages.push(new WeakRef(first));
    gates.get(id)?.();
    gates.delete(id);
    expect((await running).status).toBe('processed');
    // Asked again once the run ended, as a held duplicate is: a replay.
    if ((await processor.process({ id, body: new Uint8Array(1_000) })).status === 'replayed')
      replayed += 1;
  }
  expect(replayed).toBe(KEYS);
  // Before consumers34 nothing leaked either: this pins it (a map entry left behind per key
  // would keep every run's promise). Counted again for up to 2 s while any is alive: on a
  // loaded CI lane the last key's run was still reachable at the first count (1 of 100),
  // from work of its own still settling; a leak keeps one a key and never gets there.
  const alive = await settledCount(() => stillAlive(runs) + stillAlive(messages), {
    atMost: 0,
    waitMs: 2_000,
  });
  expect(alive).toBe(0);
  processor.close();
  await processor.idle();
});
