import {
  createIdempotency,
  fingerprint,
  type IdempotencyStore,
  InProgressError,
  isValidKey,
  MismatchError,
} from '@idem/core';
import { createMemoryStore } from '@idem/store-memory';

// Interim stand-in for @idem/http while it is being written: same contract (400/409/422,
// Idempotent-Replayed, 2xx recorded), built on @idem/core. Replaced once @idem/http builds.

interface Recorded {
  status: number;
  headers: [string, string][];
  body: string;
}

export interface IdempotentAppOptions {
  store?: IdempotencyStore;
  leaseMs?: number;
}

function parseKey(value: string | null): string | null {
  if (value === null) return null;
  const v = value.trim();
  if (v.startsWith('"') && v.endsWith('"') && v.length >= 2)
    return v.slice(1, -1).replace(/\\([\\"])/g, '$1');
  return v;
}

function problem(status: number, title: string, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify({ type: 'about:blank', title, status }), {
    status,
    headers: { 'content-type': 'application/problem+json', ...headers },
  });
}

export function idempotent(
  handler: (request: Request) => Promise<Response>,
  options: IdempotentAppOptions = {},
): (request: Request) => Promise<Response> {
  const idem = createIdempotency<Recorded>({
    store: options.store ?? createMemoryStore({ sweepIntervalMs: 0 }),
    leaseMs: options.leaseMs ?? 30_000,
    isFinal: (s) => s.ok && s.value.status >= 200 && s.value.status < 300,
  });
  return async (request) => {
    if (request.method !== 'POST' && request.method !== 'PATCH') return handler(request);
    const key = parseKey(request.headers.get('idempotency-key'));
    if (key === null) return problem(400, 'Idempotency-Key is required');
    if (!isValidKey(key)) return problem(400, 'Invalid Idempotency-Key');
    const bodyText = await request.text();
    const url = new URL(request.url);
    const fp = fingerprint({
      method: request.method,
      route: url.pathname,
      body: new TextEncoder().encode(bodyText),
    });
    try {
      const { value, replayed } = await idem.execute({ key, fingerprint: fp }, async () => {
        const response = await handler(
          new Request(request.url, {
            method: request.method,
            headers: request.headers,
            body: bodyText,
          }),
        );
        const headers: [string, string][] = [];
        response.headers.forEach((v, n) => {
          headers.push([n, v]);
        });
        return { status: response.status, headers, body: await response.text() };
      });
      const headers = new Headers(value.headers);
      if (replayed) headers.set('idempotent-replayed', 'true');
      return new Response(value.body, { status: value.status, headers });
    } catch (error) {
      if (error instanceof InProgressError) {
        return problem(409, 'In progress', {
          'retry-after': String(Math.ceil(error.retryAfterMs / 1000)),
        });
      }
      if (error instanceof MismatchError) return problem(422, 'Key reused with another request');
      throw error;
    }
  };
}
