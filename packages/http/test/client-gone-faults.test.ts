import { setTimeout as sleep } from 'node:timers/promises';
import { fetchDriver, type RunningApp, send, spyStore } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import { afterEach, describe, expect, it } from 'vitest';
import {
  createIdempotencyHandler,
  type HttpIdempotencyOptions,
  PROBLEM_TYPES,
  withIdempotency,
} from '../src/index.js';

// Adversarial cases of a client that leaves mid-stream, over a real server on loopback:
// the body the recorder keeps reading must neither crash the process when the store fails,
// nor be read forever once the lease is gone.

const encoder = new TextEncoder();
const apps: RunningApp[] = [];

afterEach(async () => {
  await Promise.all(apps.splice(0).map((app) => app.close()));
});

async function serve(
  next: Parameters<typeof withIdempotency>[0],
  options: HttpIdempotencyOptions,
): Promise<{ url: string; drain: (ms?: number) => Promise<number> }> {
  const handler = withIdempotency(next, options);
  const app = await fetchDriver(() => handler).start({
    options: { store: options.store },
    routes: new Map(),
  });
  apps.push(app);
  return { url: app.url, drain: handler.drain };
}

/** Collects unhandled rejections while `run` runs (they would crash a server process). */
async function unhandledDuring(run: () => Promise<void>): Promise<unknown[]> {
  const seen: unknown[] = [];
  const listener = (reason: unknown) => seen.push(reason);
  process.on('unhandledRejection', listener);
  try {
    await run();
  } finally {
    process.off('unhandledRejection', listener);
  }
  return seen;
}

describe('a client that leaves mid-stream, with a failing store or an endless body', () => {
  it('a final write that fails after the client left is not an unhandled rejection', async () => {
    const spied = spyStore(createMemoryStore(), { failComplete: true });
    let runs = 0;
    const { url, drain } = await serve(
      async () => {
        runs++;
        let sent = 0;
        return new Response(
          new ReadableStream<Uint8Array>({
            async pull(controller) {
              if (sent === 3) return controller.close();
              await sleep(20);
              controller.enqueue(encoder.encode(`chunk ${sent++}\n`));
            },
          }),
        );
      },
      {
        store: spied.store,
        scope: 'global',
        storeTimeoutMs: 50,
        completionWaitMs: 60,
        maxHoldMs: 400,
        onWarning: () => {},
      },
    );
    const unhandled = await unhandledDuring(async () => {
      const first = await send(url, '/report', { key: 'gone-1', body: {}, leaveAfterBytes: 1 });
      expect(first.complete).toBe(false);
      // The body is drained, its final write fails past completionWaitMs, the retries give up
      // at maxHoldMs.
      await sleep(700);
      expect(await drain(2_000)).toBe(0);
    });
    expect(unhandled).toEqual([]);
    expect(spied.calls.complete).toBeGreaterThan(0);
    expect(runs).toBe(1);
  });

  it('stops reading a body that never ends once the lease is lost (maxHoldMs), and cancels it', async () => {
    let produced = 0;
    let cancelled = false;
    const { url } = await serve(
      async () =>
        new Response(
          new ReadableStream<Uint8Array>({
            async pull(controller) {
              await sleep(10);
              controller.enqueue(encoder.encode(`data: ${produced++}\n\n`));
            },
            cancel() {
              cancelled = true;
            },
          }),
          { headers: { 'content-type': 'text/event-stream' } },
        ),
      {
        store: createMemoryStore(),
        scope: 'global',
        leaseMs: 150,
        maxHoldMs: 300,
        onWarning: () => {},
      },
    );
    const first = await send(url, '/events', { key: 'endless', body: {}, leaveAfterBytes: 1 });
    expect(first.complete).toBe(false);
    // Past maxHoldMs the lease lapses: the body can never be recorded, so nobody reads it.
    const deadline = Date.now() + 3_000;
    while (!cancelled && Date.now() < deadline) await sleep(20);
    expect(cancelled).toBe(true);
    const after = produced;
    await sleep(200);
    expect(produced - after).toBeLessThanOrEqual(1);
  });

  it('answers 503 + Retry-After when the final write of a body-less response has not landed', async () => {
    const spied = spyStore(createMemoryStore(), { failComplete: true });
    const { url, drain } = await serve(async () => new Response(null, { status: 204 }), {
      store: spied.store,
      scope: 'global',
      storeTimeoutMs: 50,
      completionWaitMs: 60,
      maxHoldMs: 300,
      onWarning: () => {},
    });
    const first = await send(url, '/ping', { key: 'no-body', body: {} });
    expect(first.status).toBe(503);
    expect(first.headers['retry-after']).toBe('1');
    expect(JSON.parse(first.body.toString('utf8'))).toMatchObject({
      type: PROBLEM_TYPES.storeUnavailable,
      status: 503,
    });
    expect(await drain(2_000)).toBe(0);
  });

  it("recordResponse (the adapters' path) answers the same 503 for a body-less response", async () => {
    const spied = spyStore(createMemoryStore(), { failComplete: true });
    const handler = createIdempotencyHandler({
      store: spied.store,
      scope: 'global',
      storeTimeoutMs: 50,
      completionWaitMs: 60,
      maxHoldMs: 300,
      unavailableRetryAfterSeconds: 7,
      onWarning: () => {},
    });
    const decision = await handler.begin({
      native: undefined as never,
      method: 'POST',
      url: 'http://api.test/ping',
      header: (name) => (name === 'idempotency-key' ? 'adapter-no-body' : undefined),
      readBody: async () => ({ kind: 'none' }),
    });
    if (decision.action !== 'execute') throw new Error(`expected execute, got ${decision.action}`);
    const response = await decision.recorder.recordResponse(new Response(null, { status: 204 }));
    expect(response.status).toBe(503);
    expect(response.headers.get('retry-after')).toBe('7');
    expect(await response.json()).toMatchObject({ type: PROBLEM_TYPES.storeUnavailable });
    expect(await handler.drain(2_000)).toBe(0);
  });
});

describe('a body longer than its Content-Length', () => {
  it('is not held whole in memory until its end: past the declared length chunks flow again', async () => {
    let pulled = 0;
    const handler = createIdempotencyHandler({
      store: createMemoryStore(),
      scope: 'global',
      onWarning: () => {},
    });
    const request = () =>
      new Request('http://api.test/lying', {
        method: 'POST',
        headers: { 'idempotency-key': 'cl' },
      });
    const response = await handler.handle(
      request(),
      async () =>
        new Response(
          new ReadableStream<Uint8Array>(
            {
              pull(controller) {
                if (pulled === 200) return controller.close();
                controller.enqueue(new Uint8Array(1_024).fill(pulled++ & 0xff));
              },
            },
            { highWaterMark: 0 },
          ),
          { headers: { 'content-length': '10' } },
        ),
    );
    const reader = response.body!.getReader();
    const first = await reader.read();
    expect(first.done).toBe(false);
    // Held until the end, the caller would see nothing before all 200 chunks were pulled.
    expect(pulled).toBeLessThan(10);
    let total = first.value!.length;
    for (let read = await reader.read(); !read.done; read = await reader.read())
      total += read.value.length;
    expect(total).toBe(200 * 1_024);
    const replay = await handler.handle(request(), async () => new Response('ran again'));
    expect((await replay.arrayBuffer()).byteLength).toBe(200 * 1_024);
  });
});
