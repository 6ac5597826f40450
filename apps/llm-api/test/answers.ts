import { generateKey } from '@idem/core';
import { expect } from 'vitest';

/** What a request got, read to its end. */
export interface Answer {
  status: number;
  retryAfter: string | null;
  contentType: string | null;
  body: string;
}

/**
 * Sends a request and reads the whole answer, giving up after `boundMs` (the client's own
 * time limit): a server that holds the request longer makes this throw, so a test that
 * awaits it fails. No timing is asserted beyond "it answered".
 */
export async function answer(url: string, init: RequestInit, boundMs: number): Promise<Answer> {
  const signal = AbortSignal.timeout(boundMs);
  try {
    const response = await fetch(url, { ...init, signal });
    return {
      status: response.status,
      retryAfter: response.headers.get('retry-after'),
      contentType: response.headers.get('content-type'),
      body: await response.text(),
    };
  } catch (error) {
    if (signal.aborted) {
      throw new Error(`${init.method ?? 'GET'} ${url} got no answer within ${boundMs} ms`);
    }
    throw error;
  }
}

/** The requests every store fault test sends: both model endpoints, usage and readiness. */
export function probes(base: string): { name: string; url: string; init: RequestInit }[] {
  const json = { 'content-type': 'application/json' };
  return [
    {
      name: 'POST /api/messages',
      url: `${base}/api/messages`,
      init: {
        method: 'POST',
        headers: { ...json, 'idempotency-key': generateKey() },
        body: JSON.stringify({ prompt: `probe ${generateKey().slice(0, 8)}`, model: 'local-1' }),
      },
    },
    {
      name: 'POST /v1/chat/completions (no key)',
      url: `${base}/v1/chat/completions`,
      init: {
        method: 'POST',
        headers: json,
        body: JSON.stringify({
          model: 'local-1',
          messages: [{ role: 'user', content: `probe ${generateKey().slice(0, 8)}` }],
        }),
      },
    },
    { name: 'GET /v1/usage', url: `${base}/v1/usage`, init: {} },
    { name: 'GET /readyz', url: `${base}/readyz`, init: {} },
  ];
}

/** The store is down: 503 with a numeric Retry-After, never a 500. */
export function expectUnavailable(name: string, got: Answer): void {
  expect({ name, status: got.status, retryAfter: got.retryAfter }).toEqual({
    name,
    status: 503,
    retryAfter: expect.stringMatching(/^\d+$/),
  });
}

/**
 * Sends a fresh keyed message up to `attempts` times, `pauseMs` apart, until one is
 * created. Returns every status seen, whether one was 201, and the ms from `since` to it.
 */
export async function firstSuccess(
  base: string,
  attempts: number,
  pauseMs: number,
  boundMs: number,
  since: number,
): Promise<{ recovered: boolean; ms: number; statuses: number[] }> {
  const statuses: number[] = [];
  for (let i = 1; i <= attempts; i += 1) {
    const [probe] = probes(base);
    const got = await answer(probe!.url, probe!.init, boundMs);
    statuses.push(got.status);
    if (got.status === 201) return { recovered: true, ms: Date.now() - since, statuses };
    await new Promise((resolve) => setTimeout(resolve, pauseMs));
  }
  return { recovered: false, ms: Date.now() - since, statuses };
}
