import { generateKey } from '@idem/core';
import { describe, expect, it } from 'vitest';
import { firstSuccess } from './answers.js';
import { BOUND_MS, sleep, useFaultStack } from './fault-stack.js';

/** A slow streamed completion and a retry of it: whether the retry attached live. */
async function attachLive(base: string) {
  const key = generateKey();
  const body = JSON.stringify({
    model: 'local-1',
    stream: true,
    messages: [{ role: 'user', content: `[slow:300] attach ${generateKey().slice(0, 8)}` }],
  });
  const send = () =>
    fetch(`${base}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'idempotency-key': key },
      body,
      signal: AbortSignal.timeout(25_000),
    });
  const first = await send();
  let ended = false;
  const firstText = first
    .text()
    .catch((e) => `ERR ${e}`)
    .finally(() => {
      ended = true;
    });
  await sleep(400);
  const retry = await send();
  // Attached to the generation in flight, not a replay of a finished one.
  const live = !ended;
  const status = retry.status;
  const retryText = await retry.text().catch((e) => `ERR ${e}`);
  const a = await firstText;
  return { firstStatus: first.status, status, live, same: a === retryText, length: a.length };
}

describe('rev13: live attach after a Redis outage ends (no restart of the app)', () => {
  const stack = useFaultStack();

  it('attaches live before, after kill -9 + restart, and after SIGSTOP/SIGCONT', async () => {
    const { redis, server } = stack();
    const before = await attachLive(server.url);
    console.log('before', JSON.stringify(before));
    await redis.kill();
    await sleep(1_500);
    await redis.restart();
    expect((await firstSuccess(server.url, 40, 100, BOUND_MS, Date.now())).recovered).toBe(true);
    const afterKill = await attachLive(server.url);
    console.log('after kill', JSON.stringify(afterKill));
    redis.freeze();
    await sleep(2_500);
    redis.thaw();
    expect((await firstSuccess(server.url, 40, 100, BOUND_MS, Date.now())).recovered).toBe(true);
    const afterFreeze = await attachLive(server.url);
    console.log('after freeze', JSON.stringify(afterFreeze));
    for (const got of [before, afterKill, afterFreeze])
      expect(got).toMatchObject({ firstStatus: 200, status: 200, live: true, same: true });
  }, 60_000);
});
