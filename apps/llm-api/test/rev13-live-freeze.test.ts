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

/**
 * The app's usage (its count of model executions), read until it answers 200: the read goes to
 * Redis with the 1 s store timeout, and just after the freeze on a machine at load 30 and more
 * one answered with an error body (no `model_executions`) and failed the test on its log line.
 * The count is what the test judges, not how soon it can be read; a read that keeps failing
 * (10 tries, 200 ms apart) fails the test with its answer.
 */
async function usageOf(url: string): Promise<{ model_executions: { started: number } }> {
  let last = '';
  for (let i = 0; i < 10; i++) {
    const response = await fetch(`${url}/v1/usage`);
    const body = await response.text();
    if (response.status === 200) return JSON.parse(body);
    last = `${response.status} ${body.slice(0, 300)}`;
    console.log('rev13 live-freeze: usage read failed', last);
    await sleep(200);
  }
  throw new Error(`GET /v1/usage kept failing: ${last}`);
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
      const usage0 = await usageOf(server.url);
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
      // The retry, tried again while the key is in progress (409) or the store did not answer
      // within its 1 s timeout (503, "retry later with the same key": on a machine at load 30
      // and more, Redis's first answers after the thaw came later than that), for up to
      // about 12 s; a state that never settles still fails the test.
      let c = await send();
      const cSeen = [c.status];
      for (let i = 0; i < 60 && (c.status === 409 || c.status === 503); i++) {
        await c.arrayBuffer();
        await sleep(200);
        c = await send();
        cSeen.push(c.status);
      }
      const rc = await readAll(c, 10_000);
      const usage1 = await usageOf(server.url);
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
          cSeen: cSeen.join(','),
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
