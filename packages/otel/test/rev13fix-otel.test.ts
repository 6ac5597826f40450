import { createIdempotency } from '@idem/core';
import { createMemoryStore } from '@idem/store-memory';
import { afterEach, describe, expect, it } from 'vitest';
import { ATTR, METRIC, OTHER_OPERATION } from '../src/index.js';
import { telemetry } from './support/telemetry.js';

// rev13fix review of maxOperations: the edges (0, 1 with overlapping executions, Infinity).

let current: ReturnType<typeof telemetry> | undefined;
afterEach(async () => {
  await current?.shutdown();
  current = undefined;
});

async function run(maxOperations: number, operations: string[]) {
  const t = telemetry({ maxOperations });
  current = t;
  const idem = createIdempotency({
    store: createMemoryStore(),
    heartbeatMs: false,
    onEvent: t.listener,
  });
  // Overlapping executions: each miss before any execution_end.
  let open = 0;
  let release: () => void = () => {};
  const gate = new Promise<void>((resolve) => {
    release = resolve;
  });
  const all = operations.map((operation, i) =>
    idem.execute({ key: `k-${i}`, scope: ['s', operation], operation }, async () => {
      open += 1;
      if (open === operations.length) release();
      await gate;
      return i;
    }),
  );
  await Promise.all(all);
  const inFlight = (await t.metrics()).get(METRIC.inFlight) ?? [];
  const results = (await t.metrics()).get(METRIC.results) ?? [];
  return {
    inFlight: inFlight.map((p) => [p.attributes[ATTR.operation], Number(p.value)]),
    labels: [...new Set(results.map((p) => p.attributes[ATTR.operation]))].sort(),
  };
}

describe('rev13fix otel: maxOperations edges', () => {
  it('0: every operation is _other, in-flight back to 0', { timeout: 10_000 }, async () => {
    const r = await run(0, ['POST /a', 'POST /b', 'POST /c']);
    expect(r.labels).toEqual([OTHER_OPERATION]);
    expect(r.inFlight).toEqual([[OTHER_OPERATION, 0]]);
  });
  it('1 with overlapping executions: in-flight balanced per label', {
    timeout: 10_000,
  }, async () => {
    const r = await run(1, ['POST /a', 'POST /b', 'POST /a', 'POST /c']);
    expect(r.labels).toEqual(['POST /a', OTHER_OPERATION]);
    expect(r.inFlight.every(([, v]) => v === 0)).toBe(true);
  });
  it('Infinity: every operation keeps its label', { timeout: 10_000 }, async () => {
    const ops = Array.from({ length: 150 }, (_, i) => `POST /o/${i}`);
    const r = await run(Number.POSITIVE_INFINITY, ops);
    expect(r.labels).toHaveLength(150);
  });
});
