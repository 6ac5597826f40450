import { generateKey } from '@idem/core';
import { describe, expect, it } from 'vitest';
import { startServerProcess } from '../src/demo/server-process.js';
import { sleep } from './fault-stack.js';

describe('a client that goes away before its JSON answer is ready', () => {
  it('is recorded in the background, replayed to the retry, and logs no error', async () => {
    const server = await startServerProcess({ PORT: '0', REDIS_URL: '', DYNAMODB_TABLE: '' });
    try {
      const key = generateKey();
      const send = (signal?: AbortSignal) =>
        fetch(`${server.url}/api/messages`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'idempotency-key': key },
          body: JSON.stringify({ prompt: '[stall:3000] gone before the answer', model: 'local-1' }),
          ...(signal ? { signal } : {}),
        });
      const started = async () =>
        (
          (await (await fetch(`${server.url}/v1/usage`)).json()) as {
            model_executions: { started: number };
          }
        ).model_executions.started;
      // The first attempt is cut while the model stalls (once the server started it, however
      // loaded the machine): the server's copy of the body is cancelled, and the outcome must
      // still be recorded by the background drain.
      const cut = new AbortController();
      const first = send(cut.signal);
      const deadline = Date.now() + 10_000;
      while ((await started()) < 1 && Date.now() < deadline) await sleep(20);
      expect(await started()).toBe(1);
      cut.abort();
      await expect(first).rejects.toMatchObject({ name: 'AbortError' });
      // The retry: a replay once the background drain recorded the outcome (a 409 while it
      // still runs, bounded).
      let retry = await send();
      for (let i = 0; i < 100 && retry.status === 409; i++) {
        await sleep(100);
        retry = await send();
      }
      expect(retry.status).toBe(201);
      expect(retry.headers.get('idempotent-replayed')).toBe('true');
      const usage = (await (await fetch(`${server.url}/v1/usage`)).json()) as {
        model_executions: { completed: number };
      };
      expect(usage.model_executions.completed).toBe(1);
      // Before the fix, the app read the cancelled body and logged an unexpected TypeError.
      expect(server.output()).not.toMatch(/unexpected error|unhandled error|TypeError/);
    } finally {
      await server.stop();
    }
  }, 20_000);
});
