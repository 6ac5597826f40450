import { createIdempotency } from '@idem/core';
import { createMemoryStore } from '@idem/store-memory';
import type { Span, Tracer } from '@opentelemetry/api';
import { afterEach, describe, expect, it } from 'vitest';
import { ATTR, METRIC, SPAN } from '../src/index.js';
import { telemetry } from './support/telemetry.js';

// rev13 adversarial review of @idem/otel: cardinality of metric attributes, and an SDK that throws.

let current: ReturnType<typeof telemetry> | undefined;
afterEach(async () => {
  await current?.shutdown();
  current = undefined;
});

describe('rev13 otel: bounded cardinality', () => {
  // FIXED (was FINDING MEDIUM): every metric carried `idem.operation` as given, and nothing
  // bounded how many distinct values it took. @idem/http's default operation is the method
  // and the request's *path* whenever the framework names no route (`handler.ts`:
  // `${method} ${request.route ?? canonicalPath(url.pathname)}`; its README: Next.js route
  // handlers, Bun, Deno and workers get `POST /api/orders/o-1/pay`, "a key is unique per
  // order"), and its README tells those users to pass `onEvent: createOtelListener()`. Then
  // every order id was a new time series on every instrument (results, in-flight, outcome
  // size, execution duration): 300 orders gave 300 series per instrument; in production the
  // SDK's cardinality limit (2,000 per instrument) fills up, every route seen after that lands
  // in the overflow series, and ids in paths reach the metrics backend. Fix: `maxOperations`
  // (default 100) distinct operation values on metrics; later ones are counted as
  // `idem.operation: "_other"`; spans keep the operation.
  it('operations that are paths (one per order) do not make one metric series each', async () => {
    const t = telemetry();
    current = t;
    const idem = createIdempotency({
      store: createMemoryStore(),
      heartbeatMs: false,
      onEvent: t.listener,
    });
    for (let i = 0; i < 300; i++) {
      const operation = `POST /api/orders/o-${i}/pay`;
      await idem.execute(
        { key: `k-${i}`, scope: ['idem/http/v1', 'user-1', operation], operation },
        async () => ({ ok: i }),
      );
    }
    const points = (await t.metrics()).get(METRIC.results) ?? [];
    const operations = new Set(points.map((p) => p.attributes[ATTR.operation]));
    expect(operations.size).toBeLessThanOrEqual(101);
    expect(operations.has('_other')).toBe(true);
    // Spans keep the operation as it is.
    expect(
      t
        .spans(SPAN.acquire)
        .some((s) => s.attributes[ATTR.operation] === 'POST /api/orders/o-299/pay'),
    ).toBe(true);
    // Every execution is still counted.
    const misses = points
      .filter((p) => p.attributes[ATTR.result] === 'miss')
      .reduce((sum, p) => sum + Number(p.value), 0);
    expect(misses).toBe(300);
  }, 20_000);
});

describe('rev13 otel: an SDK that throws', () => {
  // FIXED (was FINDING LOW): the listener did span work before metric work in one function,
  // so an SDK whose tracer throws (a span processor that throws in onStart, an exporter wired
  // synchronously) skipped the metric updates of that event but not of the matching one:
  // `miss` threw in `startSpan` before `inFlight.add(1)`, while `execution_end` (no span open)
  // still ran `inFlight.add(-1)`: `idem.leases.in_flight` drifted below zero for good, one
  // per throw, and the `miss` was not counted in `idem.results`. Fix: every span or metric
  // update runs guarded on its own (`guard`), so a throwing SDK loses that update only.
  it('a tracer that throws does not unbalance idem.leases.in_flight nor lose the miss count', async () => {
    const throwing = {
      startSpan(): Span {
        throw new Error('span processor failed');
      },
      startActiveSpan() {
        throw new Error('span processor failed');
      },
    } as unknown as Tracer;
    const t2 = telemetry({ tracer: throwing });
    current = t2;
    const idem = createIdempotency({
      store: createMemoryStore(),
      heartbeatMs: false,
      onEvent: t2.listener,
    });
    await idem.execute({ key: 'k', scope: ['s'], operation: 'POST /x' }, async () => 1);
    expect(await t2.point(METRIC.inFlight, { [ATTR.operation]: 'POST /x' })).toBe(0);
    expect(
      await t2.point(METRIC.results, { [ATTR.operation]: 'POST /x', [ATTR.result]: 'miss' }),
    ).toBe(1);
    expect(t2.spans(SPAN.execute)).toHaveLength(0);
  }, 10_000);
});

describe('rev13 otel: options', () => {
  // FIXED (was FINDING LOW): `maxOpenExecutions` was not checked: `NaN` (a value read from an
  // unset environment variable, `Number(process.env.X)`) made `executions.size >= NaN` false
  // for ever, so the one bound on the listener's memory was gone without a word; a string was
  // compared by coercion. Fix: a non-negative integer or Infinity, else RangeError at
  // creation (and the same for the new `maxOperations`).
  it('maxOpenExecutions that is not a count is refused at creation', async () => {
    const { createOtelListener } = await import('../src/index.js');
    for (const bad of [Number.NaN, -1, 1.5, '100' as unknown as number]) {
      expect(() => createOtelListener({ maxOpenExecutions: bad }), String(bad)).toThrow(RangeError);
      expect(() => createOtelListener({ maxOperations: bad }), String(bad)).toThrow(RangeError);
    }
    for (const good of [0, 1, 10_000, Number.POSITIVE_INFINITY])
      expect(() =>
        createOtelListener({ maxOpenExecutions: good, maxOperations: good }),
      ).not.toThrow();
  });
});
