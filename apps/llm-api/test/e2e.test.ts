import { getIdempotencyInfo } from '@idem/client';
import { generateKey } from '@idem/core';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectRedis, deletePrefix } from './redis.js';
import { postMessage, type Stack, type StoreKind, startStack } from './stack.js';

const tag = () => generateKey().slice(0, 8);
const stores: StoreKind[] = ['memory', 'redis'];
const ask = (content: string) => ({
  model: 'local-1',
  messages: [{ role: 'user' as const, content }],
});

describe.each(stores)('llm-api end to end on the %s store', (store) => {
  let stack: Stack;
  beforeAll(async () => {
    if (store === 'redis') (await connectRedis()).disconnect();
    stack = await startStack(store);
  });
  afterAll(async () => {
    await stack?.close();
    if (store === 'redis' && stack) {
      const redis = await connectRedis();
      await deletePrefix(redis, stack.prefix);
      redis.disconnect();
    }
  });

  /** Runs `fn` and returns how the server's counters and ledger moved meanwhile. */
  async function delta(fn: () => Promise<void>) {
    const before = await stack.usage();
    const attemptsBefore = stack.attempts.length;
    await fn();
    const after = await stack.usage();
    return {
      completed: after.model_executions.completed - before.model_executions.completed,
      failed: after.model_executions.failed - before.model_executions.failed,
      messages: after.totals.messages - before.totals.messages,
      tokens: after.totals.total_tokens - before.totals.total_tokens,
      attempts: stack.attempts.slice(attemptsBefore),
      before,
      after,
    };
  }

  const send = (prompt: string, key: string, fetchFn: typeof fetch = fetch) =>
    fetchFn(`${stack.proxy.url}/api/messages`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'idempotency-key': key },
      body: JSON.stringify({ prompt, model: 'local-1' }),
    });

  it('POST /api/messages creates once; a retry with the key replays the same bytes and bills nothing', async () => {
    const key = generateKey();
    const prompt = `hello ${tag()}`;
    let firstBody = '';
    const created = await delta(async () => {
      const response = await send(prompt, key);
      expect(response.status).toBe(201);
      firstBody = await response.text();
    });
    const message = JSON.parse(firstBody);
    expect(message).toMatchObject({ id: expect.stringMatching(/^msg_/), status: 'created' });
    expect(message.content.length).toBeGreaterThan(0);
    expect(created).toMatchObject({
      completed: 1,
      messages: 1,
      tokens: message.usage.total_tokens,
    });

    const replayed = await delta(async () => {
      const response = await send(prompt, key);
      expect(response.status).toBe(201);
      expect(response.headers.get('idempotent-replayed')).toBe('true');
      expect(await response.text()).toBe(firstBody);
    });
    expect(replayed).toMatchObject({ completed: 0, messages: 0, tokens: 0 });
    expect(replayed.after.data).toEqual(replayed.before.data);
  });

  it('refuses a missing key (400) and a key reused for another prompt (422) without executing', async () => {
    const key = generateKey();
    const refused = await delta(async () => {
      const missing = await fetch(`${stack.proxy.url}/api/messages`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ prompt: 'no key', model: 'local-1' }),
      });
      expect(missing.status).toBe(400);
      expect(missing.headers.get('content-type')).toContain('application/problem+json');
      expect((await send(`first ${tag()}`, key)).status).toBe(201);
      const reused = await send(`second ${tag()}`, key);
      expect(reused.status).toBe(422);
      const bad = await fetch(`${stack.proxy.url}/api/messages`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'idempotency-key': generateKey() },
        body: JSON.stringify({ prompt: 42 }),
      });
      expect(bad.status).toBe(400);
    });
    expect(refused).toMatchObject({ completed: 1, messages: 1 });
  });

  it('works with the openai SDK on @idem/client fetch: non-streaming and streaming agree', async () => {
    const prompt = `same prompt both ways ${tag()}`;
    let content = '';
    let streamed = '';
    const ids: string[] = [];
    const usages: number[] = [];
    const moved = await delta(async () => {
      const completion = await stack.openai.chat.completions.create(ask(prompt));
      expect(completion.object).toBe('chat.completion');
      content = completion.choices[0]?.message.content ?? '';
      ids.push(completion.id);
      usages.push(completion.usage?.total_tokens ?? -1);
      const stream = await stack.openai.chat.completions.create({
        ...ask(prompt),
        stream: true,
        stream_options: { include_usage: true },
      });
      let streamId = '';
      let chunks = 0;
      for await (const chunk of stream) {
        streamId = chunk.id;
        chunks += 1;
        streamed += chunk.choices[0]?.delta?.content ?? '';
        if (chunk.usage) usages.push(chunk.usage.total_tokens);
      }
      expect(chunks).toBeGreaterThan(3);
      ids.push(streamId);
    });
    expect(content.length).toBeGreaterThan(0);
    expect(streamed).toBe(content);
    expect(usages[1]).toBe(usages[0]);
    expect(new Set(ids).size).toBe(2);
    expect(moved).toMatchObject({ completed: 2, messages: 2, tokens: (usages[0] ?? 0) * 2 });
    expect(moved.after.data.map((d) => d.message_id)).toEqual(expect.arrayContaining(ids));
    // Every SDK call carried one key over all its attempts.
    for (const attempt of moved.attempts) expect(attempt.key).toBeTruthy();
  });

  it('serves SDKs that send no key on /v1/chat/completions (no retry protection), billed once each', async () => {
    const plain = new OpenAI({
      baseURL: `${stack.proxy.url}/v1`,
      apiKey: 'sk-plain',
      maxRetries: 0,
    });
    const moved = await delta(async () => {
      const completion = await plain.chat.completions.create(ask(`no key ${tag()}`));
      expect(completion.choices[0]?.message.content).toBeTruthy();
    });
    expect(moved).toMatchObject({ completed: 1, messages: 1 });
  });

  it('fault: answers dropped after commit are replayed on retry, one execution each', async () => {
    let tokens = 0;
    const moved = await delta(async () => {
      const got = await postMessage(stack, `dropped ${tag()}`, { 'x-demo-fault': 'drop-response' });
      expect(got.status).toBe(201);
      expect(getIdempotencyInfo(got.response)).toMatchObject({ attempts: 2, replayed: true });
      tokens += got.json.usage.total_tokens;
      const completion = await stack.openai.chat.completions.create(ask(`dropped sdk ${tag()}`), {
        headers: { 'x-demo-fault': 'drop-response' },
      });
      tokens += completion.usage?.total_tokens ?? 0;
    });
    expect(stack.proxy.injected.dropped).toBeGreaterThanOrEqual(2);
    expect(moved).toMatchObject({ completed: 2, messages: 2, tokens });
    expect(moved.attempts.filter((a) => a.replayed)).toHaveLength(2);
  });

  it('fault: model 500s are not recorded; the retry executes again and bills once', async () => {
    let tokens = 0;
    const moved = await delta(async () => {
      const got = await postMessage(stack, `[fail:2] flaky ${tag()}`);
      expect(got.status).toBe(201);
      expect(getIdempotencyInfo(got.response)).toMatchObject({ attempts: 3, replayed: false });
      tokens = got.json.usage.total_tokens;
    });
    expect(moved).toMatchObject({ completed: 1, failed: 2, messages: 1, tokens });
    expect(moved.attempts.map((a) => a.status)).toEqual([500, 500, 201]);
  });

  it('fault: a stall longer than the client timeout runs the model once (409s, then a replay)', async () => {
    let tokens = 0;
    const moved = await delta(async () => {
      const impatient = stack.fetchWith({ attemptTimeoutMs: 300 });
      const got = await postMessage(stack, `[stall:900] stuck ${tag()}`, {}, impatient);
      tokens = got.json.usage.total_tokens;
      expect(got.status).toBe(201);
    });
    expect(moved).toMatchObject({ completed: 1, messages: 1, tokens });
    expect(moved.attempts[0]?.failure).toBe('timeout');
    expect(moved.attempts.at(-1)).toMatchObject({ status: 201, replayed: true });
  }, 20_000);

  it('fault: concurrent duplicate submits create one message', async () => {
    const key = generateKey();
    const prompt = `[slow:15] five at once ${tag()}`;
    const moved = await delta(async () => {
      const all = await Promise.all(
        Array.from({ length: 5 }, () => postMessage(stack, prompt, { 'idempotency-key': key })),
      );
      expect(all.map((a) => a.status)).toEqual([201, 201, 201, 201, 201]);
      expect(new Set(all.map((a) => a.json.id)).size).toBe(1);
      expect(all.filter((a) => getIdempotencyInfo(a.response)?.replayed)).toHaveLength(4);
    });
    expect(moved).toMatchObject({ completed: 1, messages: 1 });
  });

  it('fault: a stream cut mid-way is resumed by the client (same key, Last-Event-ID): one whole stream, one execution', async () => {
    const key = generateKey();
    const body = { ...ask(`[slow:20] cut stream ${tag()}`), stream: true as const };
    let resumed = '';
    let whole = '';
    const moved = await delta(async () => {
      const cut = await stack.openai.chat.completions.create(body, {
        headers: { 'Idempotency-Key': key, 'x-demo-fault': 'cut-stream:500' },
      });
      // @idem/client attaches to the generation in flight after the cut: the SDK sees no break.
      for await (const chunk of cut) resumed += chunk.choices[0]?.delta?.content ?? '';
      const replayed = await stack.openai.chat.completions.create(body, {
        headers: { 'Idempotency-Key': key },
      });
      for await (const chunk of replayed) whole += chunk.choices[0]?.delta?.content ?? '';
    });
    expect(resumed).toBe(whole);
    expect(whole.length).toBeGreaterThan(0);
    expect(moved).toMatchObject({ completed: 1, messages: 1 });
  });

  it('leaves the ledger unchanged when every earlier request is sent again', async () => {
    const before = await stack.usage();
    const keys: string[] = [];
    for (let i = 0; i < 3; i++) {
      const got = await postMessage(stack, `again ${i}`, {
        'idempotency-key': `again-${store}-${i}-${stack.prefix}`,
      });
      keys.push(got.json.id);
    }
    const snapshot = await stack.usage();
    for (let i = 0; i < 3; i++) {
      const got = await postMessage(stack, `again ${i}`, {
        'idempotency-key': `again-${store}-${i}-${stack.prefix}`,
      });
      expect(getIdempotencyInfo(got.response)?.replayed).toBe(true);
    }
    const after = await stack.usage();
    expect(after).toEqual(snapshot);
    expect(snapshot.totals.messages - before.totals.messages).toBe(3);
  });
});
