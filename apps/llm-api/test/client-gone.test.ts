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
          body: JSON.stringify({ prompt: '[stall:600] gone before the answer', model: 'local-1' }),
          ...(signal ? { signal } : {}),
        });
      // The first attempt is cut while the model stalls: the server's copy of the body is
      // cancelled, and the outcome must still be recorded by the background drain.
      await expect(send(AbortSignal.timeout(200))).rejects.toMatchObject({
        name: 'TimeoutError',
      });
      await sleep(1_200);
      const retry = await send();
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
