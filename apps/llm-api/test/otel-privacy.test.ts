/**
 * What `@idem/otel` reports from llm-api never carries the raw idempotency key, the caller's
 * credentials, the principal derived from them, nor the prompt: not in span names, attributes,
 * events, exceptions or status messages, nor in metric attributes. A miss, a replay, a key
 * reused with another body (422), a duplicate in flight and a streamed completion.
 */
import { createHash } from 'node:crypto';
import { generateKey } from '@idem/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../src/config.js';
import { type RunningServer, startServer } from '../src/server.js';
import { inMemoryTelemetry } from './otel-sdk.js';

describe('llm-api with IDEM_OTEL: no key, credential, principal or prompt in telemetry', () => {
  const telemetry = inMemoryTelemetry();
  const { spans, exporter, reader } = telemetry;
  let server: RunningServer;

  beforeAll(async () => {
    telemetry.register();
    server = await startServer(parseConfig({ PORT: '0', MODEL_CHUNK_DELAY_MS: '5' }));
  });
  afterAll(async () => {
    await server?.close();
    await telemetry.shutdown();
  });

  it('every kind of request', async () => {
    const token = `sk-private-${generateKey()}`;
    const key = `client-key-${generateKey()}`;
    const streamKey = `client-stream-${generateKey()}`;
    const prompt = `prompt-${generateKey()}`;
    const send = (path: string, k: string, body: unknown) =>
      fetch(`${server.url}${path}`, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'idempotency-key': k,
          authorization: `Bearer ${token}`,
        },
        body: JSON.stringify(body),
      });
    const message = { prompt, model: 'local-1' };
    // A duplicate while the first runs, then the first, a replay, and the key reused.
    const [first, duplicate] = await Promise.all([
      send('/api/messages', key, message),
      new Promise((resolve) => setTimeout(resolve, 2)).then(() =>
        send('/api/messages', key, message),
      ),
    ]);
    await Promise.all([first.text(), duplicate.text()]);
    const replay = await send('/api/messages', key, message);
    expect(replay.headers.get('idempotent-replayed')).toBe('true');
    await replay.text();
    const reused = await send('/api/messages', key, { ...message, prompt: `${prompt}-other` });
    expect(reused.status).toBe(422);
    await reused.text();
    const chat = {
      model: 'local-1',
      stream: true,
      messages: [{ role: 'user', content: prompt }],
    };
    const streamed = await send('/v1/chat/completions', streamKey, chat);
    await streamed.text();
    const streamedAgain = await send('/v1/chat/completions', streamKey, chat);
    await streamedAgain.text();

    await reader.forceFlush();
    const finished = spans.getFinishedSpans();
    expect(finished.length).toBeGreaterThan(5);
    const reported = JSON.stringify({
      spans: finished.map((s) => ({
        name: s.name,
        attributes: s.attributes,
        events: s.events,
        status: s.status,
        links: s.links,
      })),
      metrics: exporter.getMetrics(),
    });
    expect(reported).toContain('idem.storage_key');
    const digest = createHash('sha256').update(token).digest('hex').slice(0, 32);
    for (const secret of [key, streamKey, token, prompt, digest, 'sk-private'])
      expect(reported).not.toContain(secret);
  });
});
