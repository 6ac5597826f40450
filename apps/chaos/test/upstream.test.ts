import { afterEach, describe, expect, it } from 'vitest';
import { startUpstream, type UpstreamModel } from '../src/upstream.js';

const ask = (upstream: UpstreamModel, prompt: string, signal?: AbortSignal) =>
  fetch(`${upstream.url}/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'idempotency-key': 'k1' },
    body: JSON.stringify({
      model: 'm',
      messages: [{ role: 'user', content: prompt }],
      stream: true,
    }),
    ...(signal ? { signal } : {}),
  });

describe('counting upstream model', () => {
  let upstream: UpstreamModel | undefined;
  afterEach(() => upstream?.close());

  it('counts each completed execution per logical id, with a fresh answer each time', async () => {
    upstream = await startUpstream({ chunks: 3, chunkDelayMs: 5 });
    const first = await (await ask(upstream, 'chaos:row-1 please')).text();
    const second = await (await ask(upstream, 'chaos:row-1 please')).text();
    await (await ask(upstream, 'chaos:row-2')).text();
    expect(first).toContain('data: [DONE]');
    expect(first).not.toEqual(second);
    const count = upstream.counts.get('row-1');
    expect(count).toMatchObject({ started: 2, completed: 2 });
    expect(count?.answers).toHaveLength(2);
    expect(count?.keys).toEqual(new Set(['k1']));
    expect(upstream.counts.get('row-2')?.completed).toBe(1);
  });

  it('does not count an execution whose caller went away mid-stream', async () => {
    upstream = await startUpstream({ chunks: 4, chunkDelayMs: 200 });
    const controller = new AbortController();
    const response = await ask(upstream, 'chaos:cut', controller.signal);
    const reader = response.body?.getReader();
    await reader?.read();
    controller.abort();
    await new Promise((r) => setTimeout(r, 900));
    expect(upstream.counts.get('cut')).toMatchObject({ started: 1, completed: 0 });
  });

  it('pads an answer to the size the prompt asks for', async () => {
    upstream = await startUpstream({ chunks: 4, chunkDelayMs: 0 });
    const text = await (await ask(upstream, 'chaos:big size:100000')).text();
    expect(text.length).toBeGreaterThan(100_000);
  });
});
