import { setTimeout as sleep } from 'node:timers/promises';
import {
  createIdempotency,
  createOutcomeCodec,
  type IdempotencyOptions,
  jsonSerializer,
  ManualClock,
  type OutcomeCodec,
} from '@idem/core';
import { createMemoryStore } from '@idem/store-memory';
import { type HrTime, SpanStatusCode } from '@opentelemetry/api';
import type { ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { afterEach, describe, expect, it } from 'vitest';
import { ATTR, METRIC, OTHER_OPERATION, SPAN } from '../src/index.js';
import { telemetry } from './support/telemetry.js';

// otelrev: adversarial review of @idem/otel (spans placed from the events' durations, metric
// attributes, privacy of what reaches a span).

let current: ReturnType<typeof telemetry> | undefined;
afterEach(async () => {
  await current?.shutdown();
  current = undefined;
});

function setup(options: Partial<IdempotencyOptions> = {}) {
  const t = telemetry();
  current = t;
  const idem = createIdempotency<unknown>({
    store: createMemoryStore(),
    heartbeatMs: false,
    onEvent: t.listener,
    ...options,
  });
  return { ...t, idem };
}

const ms = (time: HrTime): number => time[0] * 1_000 + time[1] / 1e6;
const length = (span: ReadableSpan | undefined): number =>
  span ? ms(span.endTime) - ms(span.startTime) : Number.NaN;

const DECODE_MS = 60;
const request = { key: 'k', scope: ['t'], operation: 'POST /x' };

describe('otelrev: a replay span covers the decoding, the acquire span ends before it', () => {
  // FIXED (was FINDING LOW): on a `hit` both spans ended at the event: the acquire span ran
  // [event - durationMs, event] although the store had answered `decodeMs` (plus the value's
  // decode) earlier, so it overlapped the replay span and sat late under the request span;
  // core read `decodeMs` before the value was decoded (a serializer's `deserialize`, the JSON
  // parse of a recorded value: 160 ms for a 5 MB outcome) and emitted the event after it, so
  // that decode was in no span. For `outcome_corrupt` the replay span had no length at all
  // (an `outcomeCodec` open that failed after a key service call took its time out of every
  // span). Fix: core's `decodeMs` runs from the store's answer to the event (`hit` and,
  // new, `outcome_corrupt`); the acquire span ends `decodeMs` before the event.
  it('hit: a slow deserialize is in the replay span, not after the acquire span', async () => {
    let slow = false;
    const t = setup({
      serializer: {
        serialize: (value: unknown) => jsonSerializer.serialize(value),
        deserialize: (outcome: Parameters<typeof jsonSerializer.deserialize>[0]) => {
          if (slow) {
            const until = performance.now() + DECODE_MS;
            while (performance.now() < until) {
              // a slow decode
            }
          }
          return jsonSerializer.deserialize(outcome);
        },
      },
    });
    await t.idem.execute(request, async () => ({ n: 1 }));
    slow = true;
    const before = performance.timeOrigin + performance.now();
    await t.idem.execute(request, async () => ({ n: 2 }));
    const acquire = t.spans(SPAN.acquire).at(-1);
    const [replay] = t.spans(SPAN.replay);
    expect(length(replay)).toBeGreaterThanOrEqual(DECODE_MS - 1);
    expect(ms(acquire?.endTime ?? [0, 0])).toBeLessThanOrEqual(ms(replay?.startTime ?? [0, 0]));
    // The acquire starts no earlier than the call (1 ms for the conversions to hrtime).
    expect(ms(acquire?.startTime ?? [0, 0])).toBeGreaterThanOrEqual(before - 1);
  });

  it('outcome_corrupt: a codec open that fails after a while is the replay span', async () => {
    const store = createMemoryStore();
    const keyring = (fill: number) =>
      createOutcomeCodec({ keys: [{ id: `k${fill}`, key: new Uint8Array(32).fill(fill) }] });
    const writer = createIdempotency({ store, outcomeCodec: keyring(1) });
    await writer.execute(request, async () => 1);
    // The reader's keys come from a key service that takes its time, and lack the writer's.
    const reader = keyring(2);
    const slow: OutcomeCodec = {
      seal: (encoded, context) => reader.seal(encoded, context),
      open: (stored, context) => sleep(DECODE_MS).then(() => reader.open(stored, context)),
    };
    const t = setup({ store, outcomeCodec: slow });
    await expect(t.idem.execute(request, async () => 2)).rejects.toMatchObject({
      code: 'OUTCOME_CORRUPT',
    });
    const [acquire] = t.spans(SPAN.acquire);
    const [replay] = t.spans(SPAN.replay);
    expect(replay?.status.code).toBe(SpanStatusCode.ERROR);
    // Timers may fire a millisecond early on Node's own clock.
    expect(length(replay)).toBeGreaterThanOrEqual(DECODE_MS - 2);
    expect(ms(acquire?.endTime ?? [0, 0])).toBeLessThanOrEqual(ms(replay?.startTime ?? [0, 0]));
  });
});

describe('otelrev: metric labels of client-controlled operations', () => {
  // FIXED (was FINDING LOW): an operation is the request's path wherever no route matched
  // (Express's `app.use`, which its README mounts first; a path no Hono route matches;
  // fetch-style handlers), so a client chose the `idem.operation` label's value and length.
  // `maxOperations` bounded how many, not how long: 100 paths of 8 KB (Node's default header
  // limit allows 16 KB) were 100 labels of 8 KB, kept by the SDK for every series of every
  // instrument and sent with each at every export (MB a minute to the backend), and they
  // took the 100 slots for good. Fix: an operation longer than 256 characters counts as
  // `_other` on metrics and takes no slot; spans keep it.
  it('a kilobytes-long operation is _other on metrics, takes no slot, and stays on spans', async () => {
    const t = telemetry({ maxOperations: 2 });
    current = t;
    const idem = createIdempotency({
      store: createMemoryStore(),
      heartbeatMs: false,
      onEvent: t.listener,
    });
    const long = (i: number) => `POST /${String(i).padEnd(8_000, 'x')}`;
    const operations = [long(1), long(2), long(3), 'POST /charges', 'POST /refunds'];
    for (const [i, operation] of operations.entries())
      await idem.execute({ key: `k-${i}`, scope: ['s', operation], operation }, async () => i);
    const labels = new Set<unknown>();
    for (const points of (await t.metrics()).values())
      for (const point of points) labels.add(point.attributes[ATTR.operation]);
    labels.delete(undefined); // instruments without the operation (store latency)
    // (Cut to 20 characters: a failure prints them.)
    expect([...labels].map((label) => String(label).slice(0, 20)).sort()).toEqual([
      'POST /charges',
      'POST /refunds',
      OTHER_OPERATION,
    ]);
    expect(
      t.spans(SPAN.acquire).filter((s) => s.attributes[ATTR.operation] === long(2)),
    ).toHaveLength(1);
  });
});

describe('otelrev: attribute names', () => {
  // FIXED (was FINDING LOW): a lost lease was counted in `idem.results` with a bare `phase`
  // attribute (and the span event had one too): outside the `idem.` namespace every other
  // attribute is in, in no README table and not in `ATTR`, so dashboards could only find
  // it by reading the source. Now `idem.lease_lost.phase` (`ATTR.leaseLostPhase`).
  it('a lost lease is counted with idem.lease_lost.phase, on the metric and the span event', async () => {
    const clock = new ManualClock();
    const t = setup({ store: createMemoryStore({ clock }), clock, leaseMs: 30_000 });
    const first = await t.idem.begin(request);
    clock.advance(30_001);
    const second = await t.idem.begin(request);
    if (first.kind !== 'acquired' || second.kind !== 'acquired')
      throw new Error('expected acquisitions');
    await expect(first.execution.release()).rejects.toMatchObject({ code: 'LEASE_LOST' });
    const points = (await t.metrics()).get(METRIC.results) ?? [];
    const lost = points.filter((p) => p.attributes[ATTR.result] === 'lease_lost');
    expect(lost.map((p) => p.attributes)).toEqual([
      {
        [ATTR.result]: 'lease_lost',
        [ATTR.operation]: 'POST /x',
        'idem.lease_lost.phase': 'release',
      },
    ]);
    const [stale] = t.spans(SPAN.execute);
    const event = stale?.events.find((e) => e.name === 'idem.lease_lost');
    expect(event?.attributes).toEqual({ 'idem.lease_lost.phase': 'release' });
    await second.execution.release();
  });
});
