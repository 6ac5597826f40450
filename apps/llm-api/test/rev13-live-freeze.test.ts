import { generateKey } from '@idem/core';
import { describe, expect, it } from 'vitest';
import { LEASE_MS, sleep, useFaultStack } from './fault-stack.js';

/** Reads a streamed answer to its end or its error, within `boundMs`. */
async function readAll(response: Response, boundMs: number) {
  const reader = response.body!.getReader();
  const decoder = new TextDecoder();
  let text = '';
  const timer = setTimeout(() => reader.cancel(new Error('bound')).catch(() => {}), boundMs);
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return { text, ok: true, error: undefined as unknown };
      text += decoder.decode(value, { stream: true });
    }
  } catch (error) {
    return { text, ok: false, error };
  } finally {
    clearTimeout(timer);
  }
}

describe('rev13: a streamed answer on Redis with a reader attached, while Redis freezes', () => {
  const stack = useFaultStack();

  it.each([
    [200, 2_500],
    [900, 2_500],
  ])(
    'freeze at +%i ms for %i ms: the model runs once, every client ends in bound, the retry gets the whole stream',
    async (at, freezeMs) => {
      const { redis, server } = stack();
      const key = generateKey();
      const body = JSON.stringify({
        model: 'local-1',
        stream: true,
        messages: [
          { role: 'user', content: `[slow:60] a long answer ${generateKey().slice(0, 6)}` },
        ],
      });
      const send = (extra: Record<string, string> = {}) =>
        fetch(`${server.url}/v1/chat/completions`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'idempotency-key': key, ...extra },
          body,
          signal: AbortSignal.timeout(20_000),
        });
      const usage0 = await (await fetch(`${server.url}/v1/usage`)).json();
      const a = await send();
      const t0 = Date.now();
      const aRead = readAll(a, 15_000);
      await sleep(300);
      const b = await send();
      const bStatus = b.status;
      const bRead = readAll(b, 15_000);
      await sleep(at);
      redis.freeze();
      await sleep(freezeMs);
      redis.thaw();
      const [ra, rb] = await Promise.all([aRead, bRead]);
      const took = Date.now() - t0;
      let c = await send();
      for (let i = 0; i < 60 && c.status === 409; i++) {
        await c.arrayBuffer();
        await sleep(200);
        c = await send();
      }
      const rc = await readAll(c, 10_000);
      const usage1 = await (await fetch(`${server.url}/v1/usage`)).json();
      console.log(
        JSON.stringify({
          bStatus,
          aOk: ra.ok,
          aErr: String(ra.error),
          aLen: ra.text.length,
          bOk: rb.ok,
          bErr: String(rb.error),
          bLen: rb.text.length,
          cStatus: c.status,
          cReplayed: c.headers.get('idempotent-replayed'),
          cLen: rc.text.length,
          took,
          started: usage1.model_executions.started - usage0.model_executions.started,
          lease: LEASE_MS,
        }),
      );
      expect(usage1.model_executions.started - usage0.model_executions.started).toBe(1);
      expect(c.status).toBe(200);
      expect(rc.text).toContain('[DONE]');
      // A client whose stream ended normally got the recorded answer, byte for byte; one cut
      // (an error, never a clean end) retries and gets it.
      if (ra.ok) expect(ra.text).toBe(rc.text);
      if (rb.ok) expect(rb.text).toBe(rc.text);
    },
    30_000,
  );
});
