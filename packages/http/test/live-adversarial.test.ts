/**
 * Review of live streams, adversarial inputs (issue 14): bad resume headers answer a 4xx
 * problem, never a hang or a 500; readers that attach and leave or never read free their
 * place; a handler that streams past its lease ends its attached readers in bounded time.
 */
import { createMemoryLiveStreams } from '@idem/core';
import { createMemoryStore } from '@idem/store-memory';
import { describe, expect, it } from 'vitest';
import { sseApp } from './live/sse-app.js';

const post = (key: string, plan: object, headers: Record<string, string> = {}) =>
  new Request('http://127.0.0.1/stream', {
    method: 'POST',
    headers: { 'idempotency-key': key, 'content-type': 'application/json', ...headers },
    body: JSON.stringify(plan),
  });
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const drain = async (response: Response) => {
  const reader = (response.body as ReadableStream<Uint8Array>).getReader();
  const chunks: Uint8Array[] = [];
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return Buffer.concat(chunks).toString();
    chunks.push(value);
  }
};

const BAD_IDS = ['\u0001\u0002', 'x'.repeat(20_000), 'not-a-number', '-1', '9'.repeat(40), '1 2'];
const BAD_GENERATIONS = ['abc', '-1', '1e0', '01', '1.0', 'x'.repeat(5_000), '2'];

async function expectProblem(response: Response, status: number) {
  expect(response.status).toBe(status);
  expect(response.headers.get('content-type')).toContain('application/problem+json');
  const body = (await response.json()) as { status: number; title: string };
  expect(body.status).toBe(status);
}

describe('live streams, adversarial: bad resume headers', () => {
  const make = () =>
    sseApp(createMemoryStore(), {
      liveStreams: { channel: createMemoryLiveStreams(), anchorWaitMs: 150 },
    });

  it('Last-Event-ID garbage, huge or with control characters: 412 live and on replay, nothing run', async () => {
    const app = make();
    const plan = { events: 6, intervalMs: 60 };
    const first = await app.handle(post('bad-id', plan));
    const all = drain(first);
    await sleep(80);
    for (const id of BAD_IDS) {
      const started = performance.now();
      await expectProblem(await app.handle(post('bad-id', plan, { 'last-event-id': id })), 412);
      expect(performance.now() - started).toBeLessThan(5_000);
    }
    await all;
    for (const id of BAD_IDS)
      await expectProblem(await app.handle(post('bad-id', plan, { 'last-event-id': id })), 412);
    expect(app.runs()).toBe(1);
  }, 30_000);

  it('Idempotent-Generation garbage: 412 live, on replay and on a free key, nothing run', async () => {
    const app = make();
    const plan = { events: 6, intervalMs: 60 };
    const first = await app.handle(post('bad-gen', plan));
    const all = drain(first);
    await sleep(80);
    for (const generation of BAD_GENERATIONS)
      await expectProblem(
        await app.handle(post('bad-gen', plan, { 'idempotent-generation': generation })),
        412,
      );
    await all;
    for (const generation of BAD_GENERATIONS) {
      await expectProblem(
        await app.handle(post('bad-gen', plan, { 'idempotent-generation': generation })),
        412,
      );
      await expectProblem(
        await app.handle(post('bad-gen-free', plan, { 'idempotent-generation': generation })),
        412,
      );
    }
    expect(app.runs()).toBe(1);
  }, 30_000);

  it('a resume (Last-Event-ID) of a key with no stream never runs the handler: 412, key left free', async () => {
    // A client holding events 1..N of an execution that failed (key released) or lapsed
    // must not get a new execution's stream: appended after event N (or cut after the
    // new stream's event N, as @idem/client does), it would splice two executions.
    const app = make();
    const plan = { events: 3, intervalMs: 1 };
    await expectProblem(await app.handle(post('free-resume', plan, { 'last-event-id': '2' })), 412);
    expect(app.runs()).toBe(0);
    // An empty Last-Event-ID (no event seen yet) asks for the whole stream: it runs.
    const whole = await app.handle(post('free-resume', plan, { 'last-event-id': '' }));
    expect(whole.status).toBe(200);
    await drain(whole);
    expect(app.runs()).toBe(1);
  }, 30_000);
});

describe('live streams, adversarial: readers are bounded', () => {
  it('200 readers that attach and leave, and 4 that never read, free their places', async () => {
    const channel = createMemoryLiveStreams();
    const app = sseApp(createMemoryStore(), {
      liveStreams: { channel, maxReaders: 4, stallMs: 200 },
    });
    const plan = { events: 40, intervalMs: 50 };
    const first = await app.handle(post('churn', plan));
    const all = drain(first);
    await sleep(60);
    for (let i = 0; i < 200; i++) {
      const attached = await app.handle(post('churn', plan));
      expect(attached.status).toBe(200);
      await attached.body?.cancel();
    }
    expect(channel.stats().readers).toBe(0);
    const idle: Response[] = [];
    for (let i = 0; i < 4; i++) idle.push(await app.handle(post('churn', plan)));
    expect(idle.every((response) => response.status === 200)).toBe(true);
    expect((await app.handle(post('churn', plan))).status).toBe(409);
    await sleep(600);
    // Never read: cut after stallMs, their places are free again.
    expect(channel.stats().readers).toBe(0);
    const again = await app.handle(post('churn', plan));
    expect(again.status).toBe(200);
    const [text, attachedText] = await Promise.all([all, drain(again)]);
    expect(attachedText).toBe(text);
    expect(app.runs()).toBe(1);
  }, 30_000);

  it('a handler that streams forever past its hold: attached readers end with an error in bounded time', async () => {
    const channel = createMemoryLiveStreams();
    const app = sseApp(createMemoryStore(), {
      // A lease long enough that a loaded machine's late timers never let it lapse before the
      // duplicate arrives (it would take over and run a second, endless stream).
      leaseMs: 1_500,
      maxHoldMs: 2_000,
      liveStreams: { channel },
    });
    const plan = { events: 1_000_000, intervalMs: 20 };
    const first = await app.handle(post('forever', plan));
    const firstAll = drain(first).then(
      () => 'ended',
      () => 'broken',
    );
    await sleep(50);
    const attached = await app.handle(post('forever', plan));
    expect(attached.status).toBe(200);
    expect(attached.headers.get('idempotent-generation')).toBe('1');
    const started = performance.now();
    const outcome = await Promise.race([
      drain(attached).then(
        () => 'ended',
        () => 'broken',
      ),
      sleep(15_000).then(() => 'hung'),
    ]);
    expect(outcome).toBe('broken');
    expect(performance.now() - started).toBeLessThan(8_000);
    await first.body?.cancel().catch(() => {});
    void firstAll;
    expect(app.runs()).toBe(1);
  }, 30_000);
});
