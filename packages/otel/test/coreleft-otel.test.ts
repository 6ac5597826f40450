// coreleft: leftovers of earlier audits of @idem/otel. (1) A bad option is a typed
// InvalidInputError (INVALID_INPUT) and still a RangeError. (2) Past `maxOpenExecutions`, an
// acquisition holds no entry in the listener's map of open execute spans; another store's
// acquisition of the same (storage key, fence) pair, begun once a slot freed, got the entry,
// and the first one's end (its release, say) ended that span with its own result, in the
// other request's trace.
import { createIdempotency, IdemError, isIdemError } from '@idem/core';
import { createMemoryStore } from '@idem/store-memory';
import { context, type Tracer, trace } from '@opentelemetry/api';
import { afterEach, describe, expect, it } from 'vitest';
import { ATTR, createOtelListener, SPAN } from '../src/index.js';
import { cappedOn, end, firstReleasesSecondCompletes, miss, OP } from './support/pairs.js';
import { telemetry } from './support/telemetry.js';

let current: ReturnType<typeof telemetry> | undefined;
afterEach(async () => {
  await current?.shutdown();
  current = undefined;
});

function setup() {
  current = telemetry();
  return current;
}

const body = { meta: {}, body: new Uint8Array([1]) };

describe('coreleft: options are typed errors', () => {
  it('each refused option is INVALID_INPUT, an IdemError, and still a RangeError', () => {
    const bad: unknown[] = [
      5,
      null,
      { span: false },
      { spans: 'false' },
      { tracer: {} },
      { meter: {} },
      { maxOpenExecutions: Number.NaN },
      { maxOperations: -1 },
      // Its message never converts the value itself (a throwing toString threw its own error).
      {
        maxOperations: {
          toString: () => {
            throw new Error('toString');
          },
        },
      },
    ];
    for (const options of bad) {
      let error: unknown;
      try {
        createOtelListener(options as never);
      } catch (caught) {
        error = caught;
      }
      const label = JSON.stringify(options);
      expect(error instanceof RangeError, label).toBe(true);
      expect(error instanceof IdemError, label).toBe(true);
      expect(isIdemError(error, 'INVALID_INPUT'), label).toBe(true);
      expect((error as Error).name, label).toBe('RangeError');
    }
  });
});

/** A listener of spans only, with at most `maxOpenExecutions` open, counting them. */
const capped = (maxOpenExecutions: number) => cappedOn(setup(), maxOpenExecutions);

/** Runs `fn` with `root` as the active span: what it starts is in `root`'s trace. */
const under = <R>(root: ReturnType<Tracer['startSpan']>, fn: () => R): R =>
  context.with(trace.setSpan(context.active(), root), fn);

describe('coreleft: a (storage key, fence) pair held past maxOpenExecutions', () => {
  it("events: the first holder's end never ends the span of a second holder begun later", () => {
    const { t, counted, listener } = capped(1);
    const other = 'b'.repeat(64);
    listener(miss(1, other)); // takes the one slot
    listener(miss(5)); // store A: past the limit, no span
    listener(end('completed', 1, other)); // the slot is free again
    listener(miss(5)); // store B, same pair
    // A releases (its events must not be put on any span of B's), B completes.
    firstReleasesSecondCompletes(t, counted, listener);
    // Both ended: the pair (and every other) gets its span again.
    listener(miss(5));
    listener(end('released', 5));
    expect(t.spans(SPAN.execute).at(-1)?.attributes[ATTR.result]).toBe('released');
    expect(counted.open()).toBe(0);
  });

  it('two engines on two stores, maxOpenExecutions 1: no release lands in the trace of the request that completed', async () => {
    const { t, counted, listener } = capped(1);
    const [a, b] = [createMemoryStore(), createMemoryStore()].map((store) =>
      createIdempotency({ store, onEvent: listener, heartbeatMs: false }),
    );
    if (!a || !b) throw new Error('two engines');
    const request = { key: 'order-1', scope: ['POST /pay'], operation: OP };
    const filler = await a.begin({ ...request, key: 'filler' });
    // Tenant A's request begins past the limit (the filler holds the one slot).
    const rootA = t.tracer.startSpan('tenant A');
    const first = await under(rootA, () => a.begin(request));
    if (filler.kind !== 'acquired' || first.kind !== 'acquired') throw new Error('acquired');
    await filler.execution.release();
    // Tenant B's, on the other store, has the same storage key and fence.
    const rootB = t.tracer.startSpan('tenant B');
    const second = await under(rootB, () => b.begin(request));
    if (second.kind !== 'acquired') throw new Error('acquired');
    expect(second.execution.fence).toBe(first.execution.fence);
    await under(rootA, () => first.execution.release());
    await under(rootB, () => second.execution.complete(body));
    rootA.end();
    rootB.end();
    const traceB = rootB.spanContext().traceId;
    const saysReleased = t
      .spans()
      .filter((s) => s.spanContext().traceId === traceB)
      .filter(
        (s) =>
          s.attributes[ATTR.result] === 'released' ||
          s.events.some((e) => e.name === 'idem.released'),
      );
    expect(saysReleased.map((s) => s.name)).toEqual([]);
    expect(counted.open()).toBe(0);
    // Everything ended: later executions on either store get their spans and results again.
    await a.execute({ ...request, key: 'order-2' }, async () => 'ok');
    await b.execute({ ...request, key: 'order-3' }, async () => 'ok');
    const results = t.spans(SPAN.execute).map((s) => s.attributes[ATTR.result]);
    expect(results.slice(-2)).toEqual(['completed', 'completed']);
    expect(counted.open()).toBe(0);
  });

  it('memory stays bounded past the limit, and spans come back once the overflow ended', () => {
    const { t, counted, listener } = capped(2);
    const key = (i: number) => i.toString(16).padStart(64, '0');
    for (let i = 0; i < 5_000; i++) listener(miss(1, key(i)));
    expect(counted.open()).toBe(2);
    for (let i = 0; i < 5_000; i++) listener(end('completed', 1, key(i)));
    expect(counted.open()).toBe(0);
    // Ends of acquisitions never begun (a listener fed by hand) take no count below zero.
    for (let i = 0; i < 100; i++) listener(end('completed', 9, key(i)));
    const before = t.spans(SPAN.execute).length;
    for (let i = 0; i < 2; i++) listener(miss(2, key(i)));
    expect(counted.open()).toBe(2);
    for (let i = 0; i < 2; i++) listener(end('completed', 2, key(i)));
    expect(t.spans(SPAN.execute).length).toBe(before + 2);
  });

  it('a tracer that throws for one acquisition: a second holder of its pair gets no span its end could close', () => {
    const t = setup();
    let fail = true;
    const tracer: Tracer = {
      startSpan(name, options, ctx) {
        if (name === SPAN.execute && fail) {
          fail = false;
          throw new Error('span processor down');
        }
        return t.tracer.startSpan(name, options, ctx);
      },
      startActiveSpan: t.tracer.startActiveSpan.bind(t.tracer) as Tracer['startActiveSpan'],
    };
    const listener = createOtelListener({ tracer, metrics: false });
    listener(miss(3)); // A: the tracer threw, no span
    listener(miss(3)); // B, same pair
    listener(end('released', 3)); // A ends
    listener(end('completed', 3)); // B ends
    expect(t.spans(SPAN.execute).filter((s) => s.attributes[ATTR.result] === 'released')).toEqual(
      [],
    );
    listener(miss(3));
    listener(end('completed', 3));
    expect(t.spans(SPAN.execute).at(-1)?.attributes[ATTR.result]).toBe('completed');
  });
});
