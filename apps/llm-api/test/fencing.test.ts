import { generateKey } from '@idem/core';
import { describe, expect, it } from 'vitest';
import { createApp } from '../src/app.js';
import { openBackend } from '../src/backend.js';
import type { ChatModel, ModelInput, Usage } from '../src/model/model.js';

/**
 * A model that ignores its abort signal and waits for the test to release it: the executor
 * that outlives its lease, which only the fence on the bill can stop.
 */
function stubbornModel() {
  const gates: (() => void)[] = [];
  const model: ChatModel = {
    kind: 'local',
    async *generate(_input: ModelInput): AsyncGenerator<string, Usage, void> {
      await new Promise<void>((resolve) => gates.push(resolve));
      yield 'late answer';
      return { prompt_tokens: 1, completion_tokens: 2, total_tokens: 3 };
    },
  };
  return { model, gates };
}

describe('billing is fenced by the execution context', () => {
  it('an executor that outlived its lease cannot bill after the takeover did', async () => {
    const backend = await openBackend({ kind: 'memory' }, 'test:');
    const { model, gates } = stubbornModel();
    // A short lease and no heartbeat: the first execution loses its lease while it runs.
    const { app } = createApp({ backend, model, leaseMs: 150, heartbeatMs: false });
    const key = generateKey();
    const send = () =>
      app.request('/api/messages', {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'idempotency-key': key },
        body: JSON.stringify({ prompt: 'fenced', model: 'local-1' }),
      });

    const stale = send();
    while (gates.length < 1) await new Promise((r) => setTimeout(r, 5));
    await new Promise((r) => setTimeout(r, 250)); // the first lease passes
    const takeover = send();
    while (gates.length < 2) await new Promise((r) => setTimeout(r, 5));

    gates[1]?.(); // the takeover (fence 2) finishes first and bills
    const second = await takeover;
    expect(second.status).toBe(201);
    const message = (await second.json()) as { id: string };

    gates[0]?.(); // the stale executor (fence 1) finishes: its bill is refused
    const first = await stale;
    expect(first.status).toBe(409);
    expect(((await first.json()) as { error: { type: string } }).error.type).toBe('lease_lost');

    const entries = await backend.ledger.entries();
    expect(entries).toEqual([
      expect.objectContaining({ messageId: message.id, fence: 2, totalTokens: 3 }),
    ]);
    expect(await backend.ledger.stats()).toMatchObject({ model_started: 2, model_completed: 1 });

    // The retry after all of it replays the takeover's answer.
    const replay = await send();
    expect(replay.headers.get('idempotent-replayed')).toBe('true');
    expect(((await replay.json()) as { id: string }).id).toBe(message.id);
    await backend.close();
  });
});
