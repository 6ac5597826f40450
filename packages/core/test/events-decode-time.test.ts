import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import {
  createIdempotency,
  type IdemEvent,
  jsonSerializer,
  type OutcomeCodec,
} from '../src/index.js';
import { FakeStore } from './support/fake-store.js';

// otelrev review: `decodeMs` of `hit` was read before the value was decoded (the
// serializer's `deserialize`, or the JSON parse of a recorded value), while the event came
// after it: a listener placing the acquire `decodeMs` before the event (as @idem/otel's
// spans do) put it that much too late, and the decode was in no span. `outcome_corrupt` had
// no `decodeMs`: an `outcomeCodec` whose open took a while before failing was counted in
// nothing. `decodeMs` now runs from the store's answer to the event.

const DECODE_MS = 60;

/** Holds the thread for `ms` (a decode that takes that long). */
function busy(ms: number): void {
  const until = performance.now() + ms;
  while (performance.now() < until) {
    // a slow decode
  }
}

const parse = JSON.parse;
afterEach(() => {
  JSON.parse = parse;
});

function setup(options: Record<string, unknown> = {}) {
  const events: IdemEvent[] = [];
  const idem = createIdempotency<unknown>({
    store: new FakeStore(),
    heartbeatMs: false,
    onEvent: (e) => events.push(e),
    ...options,
  });
  const of = <K extends IdemEvent['type']>(type: K) =>
    events.filter((e): e is Extract<IdemEvent, { type: K }> => e.type === type);
  return { idem, of };
}

const request = { key: 'k', scope: ['t'], operation: 'POST /x' };

describe('decodeMs runs from the store answer to the event', () => {
  it("hit: a serializer's slow deserialize is in decodeMs", async () => {
    let slow = false;
    const { idem, of } = setup({
      serializer: {
        serialize: (value: unknown) => jsonSerializer.serialize(value),
        deserialize: (outcome: Parameters<typeof jsonSerializer.deserialize>[0]) => {
          if (slow) busy(DECODE_MS);
          return jsonSerializer.deserialize(outcome);
        },
      },
    });
    await idem.execute(request, async () => ({ n: 1 }));
    slow = true;
    expect(await idem.execute(request, async () => ({ n: 2 }))).toEqual({
      value: { n: 1 },
      replayed: true,
    });
    const [hit] = of('hit');
    expect(hit?.decodeMs).toBeGreaterThanOrEqual(DECODE_MS - 1);
  });

  it('hit: the JSON parse of a recorded value is in decodeMs', async () => {
    const { idem, of } = setup();
    await idem.execute(request, async () => ({ n: 1 }));
    JSON.parse = ((...args: Parameters<typeof JSON.parse>) => {
      busy(DECODE_MS);
      return parse(...args);
    }) as typeof JSON.parse;
    const replay = await idem.execute(request, async () => ({ n: 2 }));
    JSON.parse = parse;
    expect(replay).toEqual({ value: { n: 1 }, replayed: true });
    const [hit] = of('hit');
    expect(hit?.decodeMs).toBeGreaterThanOrEqual(DECODE_MS - 1);
  });

  it('outcome_corrupt: a codec open that fails after a while is its decodeMs', async () => {
    let failOpen = false;
    const codec: OutcomeCodec = {
      seal: async (encoded) => encoded,
      open: async (stored) => {
        if (!failOpen) return stored;
        await sleep(DECODE_MS);
        throw new Error('no key for this outcome');
      },
    };
    const { idem, of } = setup({ outcomeCodec: codec });
    await idem.execute(request, async () => 1);
    failOpen = true;
    await expect(idem.execute(request, async () => 2)).rejects.toMatchObject({
      code: 'OUTCOME_CORRUPT',
    });
    const [corrupt] = of('outcome_corrupt');
    // Timers may fire a millisecond early on Node's own clock.
    expect(corrupt?.decodeMs).toBeGreaterThanOrEqual(DECODE_MS - 2);
    expect(corrupt?.durationMs).toBeLessThan(corrupt?.decodeMs ?? 0);
  });
});
