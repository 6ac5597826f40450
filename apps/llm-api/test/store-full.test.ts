import { PROBLEM_TYPES } from '@idem/http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../src/config.js';
import { type RunningServer, startServer } from '../src/server.js';

/**
 * The memory store is bounded (IDEM_MEMORY_MAX_ENTRIES / _BYTES) and never drops a live
 * record to make room: once full, a new key gets 503 store-full, which tells the client (and
 * the operator) more than "unavailable", and the model does not run.
 */
describe('a full memory store', () => {
  let server: RunningServer;
  beforeAll(async () => {
    server = await startServer(
      parseConfig({ PORT: '0', MODEL_CHUNK_DELAY_MS: '0', IDEM_MEMORY_MAX_ENTRIES: '1' }),
    );
  });
  afterAll(async () => {
    await server?.close();
  });

  const post = (key: string) =>
    fetch(`${server.url}/api/messages`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'idempotency-key': key },
      body: JSON.stringify({ prompt: `full ${key}`, model: 'm' }),
    });
  const started = async () =>
    (
      (await (await fetch(`${server.url}/v1/usage`)).json()) as {
        model_executions: { started: number };
      }
    ).model_executions.started;

  it('answers a new key 503 store-full with Retry-After, runs nothing, and still replays the key it holds', async () => {
    const first = await post('full-1');
    expect(first.status).toBe(201);
    const before = await started();

    const refused = await post('full-2');
    expect(refused.status).toBe(503);
    expect(refused.headers.get('retry-after')).toBe('1');
    expect(await refused.json()).toMatchObject({ type: PROBLEM_TYPES.storeFull, status: 503 });
    expect(await started()).toBe(before);

    const replay = await post('full-1');
    expect(replay.status).toBe(201);
    expect(replay.headers.get('idempotent-replayed')).toBe('true');
  });
});
