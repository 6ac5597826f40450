import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import type { IdemEvent } from '@idem/core';
import { spyStore } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import { describe, expect, it } from 'vitest';
import {
  createIdempotencyHandler,
  type HttpIdempotencyOptions,
  PROBLEM_TYPES,
  REPLAYED_HEADER,
  withIdempotency,
} from '../src/index.js';

function post(key: string): Request {
  return new Request('http://api.test/report', {
    method: 'POST',
    headers: { 'idempotency-key': key, 'content-type': 'application/json' },
    body: '{}',
  });
}

/** A streamed body of `count` chunks of `size` bytes, each a fresh buffer. */
function streamOf(count: number, size: number, status = 200): Response {
  let sent = 0;
  return new Response(
    new ReadableStream<Uint8Array>(
      {
        pull(controller) {
          if (sent === count) return controller.close();
          controller.enqueue(new Uint8Array(size).fill(sent++ & 0xff));
        },
      },
      { highWaterMark: 0 },
    ),
    { status, headers: { 'content-type': 'application/octet-stream' } },
  );
}

function setup(options: Partial<HttpIdempotencyOptions> = {}, storeCap?: number) {
  const spied = spyStore(createMemoryStore(storeCap ? { maxOutcomeBytes: storeCap } : {}));
  const events: IdemEvent[] = [];
  const warnings: string[] = [];
  const handler = createIdempotencyHandler({
    store: spied.store,
    scope: 'global',
    onEvent: (event) => events.push(event),
    onWarning: (message) => warnings.push(message),
    ...options,
  });
  return { spied, events, warnings, handler };
}

describe('outcome cap', () => {
  it.each([
    ['the maxOutcomeBytes option', { maxOutcomeBytes: 1_000 }, undefined],
    ['the store limit', {}, 1_000],
  ])(
    'streams a response over %s whole, records a marker, and a retry gets a problem, not a second run',
    async (_name, options, storeCap) => {
      const { spied, events, warnings, handler } = setup(options, storeCap);
      let runs = 0;
      const next = async () => {
        runs++;
        return streamOf(3, 600);
      };
      const first = await handler.handle(post('big'), next);
      expect(first.status).toBe(200);
      expect((await first.arrayBuffer()).byteLength).toBe(1_800);
      // The marker stands in for the outcome: one final write, nothing released.
      expect(spied.calls).toMatchObject({ complete: 1, release: 0 });
      expect(spied.completed[0]!.meta).toMatchObject({ kind: 'not_recorded', reason: 'too_large' });
      expect(events).toContainEqual(
        expect.objectContaining({ type: 'outcome_not_recorded', reason: 'too_large' }),
      );
      expect(warnings.filter((m) => /not recorded/.test(m))).toHaveLength(1);

      const retry = await handler.handle(post('big'), next);
      expect(retry.status).toBe(500);
      expect(retry.headers.get('content-type')).toMatch(/^application\/problem\+json/);
      expect(await retry.json()).toMatchObject({
        type: PROBLEM_TYPES.outcomeNotRecorded,
        status: 500,
      });
      expect(retry.headers.get(REPLAYED_HEADER)).toBeNull();
      expect(runs).toBe(1);
    },
  );

  it('records a response just under the cap and replays it', async () => {
    const { handler } = setup({ maxOutcomeBytes: 4_096 });
    const first = await handler.handle(post('fits'), async () => streamOf(3, 600));
    expect((await first.arrayBuffer()).byteLength).toBe(1_800);
    const replay = await handler.handle(post('fits'), async () => streamOf(1, 1));
    expect(replay.headers.get(REPLAYED_HEADER)).toBe('true');
    expect((await replay.arrayBuffer()).byteLength).toBe(1_800);
  });

  it('holds the end of a body of known length until the marker is written', async () => {
    const { spied, handler } = setup({ maxOutcomeBytes: 100 });
    const body = new Uint8Array(500).fill(7);
    const response = await handler.handle(
      post('known'),
      async () => new Response(body, { headers: { 'content-length': '500' } }),
    );
    const reader = response.body!.getReader();
    const read = await reader.read();
    expect(spied.calls.complete).toBe(1);
    expect(read.value!.byteLength).toBe(500);
    expect((await reader.read()).done).toBe(true);
  });

  it('releases a response over the cap that is not final: the retry runs again', async () => {
    const { spied, handler } = setup({ maxOutcomeBytes: 1_000 });
    let runs = 0;
    const next = async () => {
      runs++;
      return streamOf(3, 600, 502);
    };
    await (await handler.handle(post('bad'), next)).arrayBuffer();
    await (await handler.handle(post('bad'), next)).arrayBuffer();
    expect(runs).toBe(2);
    expect(spied.calls).toMatchObject({ complete: 0, release: 2 });
  });

  it('keeps memory bounded by the default cap while a large response streams', async () => {
    setFlagsFromString('--expose-gc');
    const collect = runInNewContext('gc') as () => void;
    // Backing stores of dead ArrayBuffers are freed by a sweeper after the collection.
    const gc = async () => {
      for (let i = 0; i < 3; i++) {
        collect();
        await new Promise((resolve) => setImmediate(resolve));
      }
    };
    const { spied, handler } = setup();
    const MiB = 1024 * 1024;
    const response = await handler.handle(post('huge'), async () => streamOf(64, MiB));
    const reader = response.body!.getReader();
    await reader.read();
    await gc();
    const baseline = process.memoryUsage().arrayBuffers;
    for (let i = 1; i < 60; i++) await reader.read();
    await gc();
    // 60 MiB went through; what is still held is bounded by the 8 MiB default cap.
    expect(process.memoryUsage().arrayBuffers - baseline).toBeLessThan(24 * MiB);
    while (!(await reader.read()).done) {}
    expect(spied.completed[0]!.meta).toMatchObject({ kind: 'not_recorded', reason: 'too_large' });
  });

  it('drains background completions, also from withIdempotency', async () => {
    const { handler } = setup();
    expect(await handler.drain(100)).toBe(0);
    const fetchLike = withIdempotency(async () => new Response('ok'), {
      store: createMemoryStore(),
      scope: 'global',
    });
    expect(await fetchLike.drain(100)).toBe(0);
  });
});
