import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { generateKey } from '@idem/core';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp } from '../src/app.js';
import { openBackend } from '../src/backend.js';
import { parseConfig } from '../src/config.js';
import { localReply } from '../src/model/local-model.js';
import { createUpstreamModel } from '../src/model/upstream-model.js';
import { type RunningServer, startServer } from '../src/server.js';
import { type Stack, startStack } from './stack.js';

/** A server whose model is the upstream at `upstream` (OpenAI-compatible base URL). */
const startProxyingServer = (upstream: string) =>
  startServer(parseConfig({ PORT: '0', UPSTREAM_URL: upstream, UPSTREAM_API_KEY: 'sk-upstream' }));

describe('an OpenAI-compatible upstream model', () => {
  // The upstream is llm-api itself on the local model: it honours Idempotency-Key.
  let upstream: Stack;
  const servers: RunningServer[] = [];
  beforeAll(async () => {
    upstream = await startStack('memory');
  });
  afterAll(async () => {
    for (const server of servers) await server.close();
    await upstream?.close();
  });

  const post = (server: RunningServer, key: string, prompt: string) =>
    fetch(`${server.url}/api/messages`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'idempotency-key': key },
      body: JSON.stringify({ prompt, model: 'local-1' }),
    });

  it('forwards a key derived from the request: a new server retrying the same key does not run the upstream again', async () => {
    const upstreamUrl = `${upstream.server.url}/v1`;
    const key = generateKey();
    const prompt = `through the upstream ${key.slice(0, 8)}`;
    const before = await upstream.usage();

    const first = await startProxyingServer(upstreamUrl);
    servers.push(first);
    const a = await post(first, key, prompt);
    expect(a.status).toBe(201);
    const answerA = (await a.json()) as { content: string; usage: { total_tokens: number } };
    expect(answerA.content).toBe(localReply('local-1', `user: ${prompt}`));
    await first.close();

    // A fresh server (its memory store knows nothing) executes again: the upstream replays.
    const second = await startProxyingServer(upstreamUrl);
    servers.push(second);
    const b = await post(second, key, prompt);
    expect(b.status).toBe(201);
    expect(((await b.json()) as { content: string }).content).toBe(answerA.content);
    const secondUsage = (await (await fetch(`${second.url}/v1/usage`)).json()) as {
      model_executions: { completed: number };
    };
    expect(secondUsage.model_executions.completed).toBe(1);

    const after = await upstream.usage();
    expect(after.model_executions.completed - before.model_executions.completed).toBe(1);
    expect(after.totals.messages - before.totals.messages).toBe(1);

    // Another key is another logical request: the upstream runs it.
    const c = await post(second, generateKey(), prompt);
    expect(c.status).toBe(201);
    const last = await upstream.usage();
    expect(last.model_executions.completed - after.model_executions.completed).toBe(1);
  });

  it('streams through to the openai SDK, and answers 502 when the upstream fails', async () => {
    const server = await startProxyingServer(`${upstream.server.url}/v1`);
    servers.push(server);
    const openai = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'sk-x', maxRetries: 0 });
    const prompt = `streamed via upstream ${generateKey().slice(0, 8)}`;
    const stream = await openai.chat.completions.create({
      model: 'local-1',
      messages: [{ role: 'user', content: prompt }],
      stream: true,
    });
    let text = '';
    for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? '';
    expect(text).toBe(localReply('local-1', `user: ${prompt}`));

    const failing = await post(server, generateKey(), `[fail:1] upstream breaks ${generateKey()}`);
    expect(failing.status).toBe(502);
    expect(((await failing.json()) as { error: { type: string } }).error.type).toBe(
      'upstream_error',
    );
  });
});

describe('an upstream call cut short by a lost lease', () => {
  let silent: Server;
  beforeAll(async () => {
    // Takes the request and never answers (or, under /mid/, stalls after a first piece):
    // the upstream is slower than the lease.
    silent = createServer((req, res) => {
      if (!req.url?.startsWith('/mid/')) return;
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write('data: {"choices":[{"delta":{"content":"partial"}}]}\n\n');
    });
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
  });
  afterAll(async () => {
    silent.closeAllConnections();
    await new Promise((resolve) => silent.close(resolve));
  });

  it.each([
    ['before the upstream answers', '/v1'],
    ['in the middle of the upstream stream', '/mid/v1'],
  ])(
    '%s is answered as a lost lease (409 + Retry-After), not as an upstream failure (502)',
    async (_when, path) => {
      const { port } = silent.address() as AddressInfo;
      const backend = await openBackend({ kind: 'memory' }, 'test:');
      const model = createUpstreamModel({
        url: `http://127.0.0.1:${port}${path}`,
        timeoutMs: 60_000,
      });
      // No heartbeat: the lease passes while the upstream call runs, and core aborts it.
      const { app } = createApp({ backend, model, leaseMs: 200, heartbeatMs: false });
      const response = await app.request('/api/messages', {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'idempotency-key': generateKey() },
        body: JSON.stringify({ prompt: 'outlives its lease', model: 'local-1' }),
      });
      expect(response.status).toBe(409);
      expect(response.headers.get('retry-after')).toBe('1');
      expect(((await response.json()) as { error: { type: string } }).error.type).toBe(
        'lease_lost',
      );
      expect(await backend.ledger.stats()).toMatchObject({ model_started: 1, model_completed: 0 });
      await backend.close();
    },
  );
});
