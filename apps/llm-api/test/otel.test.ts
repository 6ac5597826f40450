import { generateKey } from '@idem/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../src/config.js';
import { type RunningServer, startServer } from '../src/server.js';
import { inMemoryTelemetry } from './otel-sdk.js';

describe('llm-api reports idem spans and metrics to the OpenTelemetry SDK the process registers', () => {
  const telemetry = inMemoryTelemetry();
  const { spans, exporter, reader } = telemetry;
  let server: RunningServer;

  beforeAll(async () => {
    // The server starts first, the SDK after it (as when an SDK is loaded late): the app's
    // listener looks the global providers up when it records.
    server = await startServer(parseConfig({ PORT: '0', MODEL_CHUNK_DELAY_MS: '1' }));
    telemetry.register();
  });
  afterAll(async () => {
    await server?.close();
    await telemetry.shutdown();
  });

  it('a miss, then a replay of the same key: acquire, execute, complete and replay spans; results counted', async () => {
    const key = generateKey();
    const send = () =>
      fetch(`${server.url}/api/messages`, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'idempotency-key': key,
          authorization: 'Bearer sk-otel',
        },
        body: JSON.stringify({ prompt: 'hello', model: 'local-1' }),
      });
    const first = await send();
    expect(first.status).toBe(201);
    const firstBody = await first.text();
    const second = await send();
    expect(second.status).toBe(201);
    expect(second.headers.get('idempotent-replayed')).toBe('true');
    expect(await second.text()).toBe(firstBody);

    const finished = spans.getFinishedSpans();
    const named = (name: string) => finished.filter((s) => s.name === name);
    const acquires = named('idem.acquire').map((s) => s.attributes['idem.result']);
    expect(acquires).toEqual(['miss', 'hit']);
    const [execute] = named('idem.execute');
    expect(execute?.attributes).toMatchObject({ 'idem.result': 'completed', 'idem.fence': 1 });
    expect(named('idem.complete')).toHaveLength(1);
    expect(named('idem.replay')).toHaveLength(1);
    const storageKeys = new Set(finished.map((s) => s.attributes['idem.storage_key']));
    expect(storageKeys.size).toBe(1);
    const [storageKey] = storageKeys;
    expect(storageKey).toMatch(/^[0-9a-f]{64}$/);
    // Never the raw client key.
    expect(JSON.stringify(finished.map((s) => s.attributes))).not.toContain(key);
    for (const span of finished)
      expect(span.attributes['idem.operation']).toBe('POST /api/messages');

    await reader.forceFlush();
    const results = (exporter.getMetrics().at(-1)?.scopeMetrics ?? [])
      .flatMap((scope) => scope.metrics)
      .find((m) => m.descriptor.name === 'idem.results');
    const counted = Object.fromEntries(
      (results?.dataPoints ?? []).map((p) => [String(p.attributes['idem.result']), p.value]),
    );
    expect(counted).toMatchObject({ miss: 1, hit: 1 });
  });
});
