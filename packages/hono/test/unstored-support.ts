// Shared by the tests of a first execution whose outcome could not be stored
// (hono-unstored-answer, rv21-unstored): a store that refuses completions on demand, and a raw
// POST that reports what the client saw and how the response ended.
import { request } from 'node:http';
import { type IdempotencyStore, StoreUnavailableError } from '@idem/core';
import { createMemoryStore } from '@idem/store-memory';

/** A memory store whose `complete` fails while `down.complete` is set. */
export function flakyStore(): { store: IdempotencyStore; down: { complete: boolean } } {
  const inner = createMemoryStore();
  const down = { complete: false };
  const store: IdempotencyStore = Object.create(inner);
  store.complete = (input) =>
    down.complete
      ? Promise.reject(new StoreUnavailableError('complete refused (test)'))
      : inner.complete(input);
  return { store, down };
}

export interface Seen {
  status?: number;
  complete?: boolean;
  body: string;
  error?: string;
  replayed?: string;
  retryAfter?: string;
}

/**
 * A raw POST of `{"a":1}`: what the client saw, status line included, and how it ended.
 * `ownConnection`: on a connection of its own (no agent), never one kept alive by another.
 */
export function post(
  base: string,
  path: string,
  key: string,
  ownConnection = false,
): Promise<Seen> {
  return new Promise((resolve) => {
    const seen: Seen = { body: '' };
    const req = request(`${base}${path}`, {
      method: 'POST',
      headers: { 'idempotency-key': key, 'content-type': 'application/json' },
      ...(ownConnection ? { agent: false } : {}),
    });
    req.setTimeout(15_000, () => req.destroy(new Error('client timeout')));
    req.on('response', (res) => {
      seen.status = res.statusCode;
      seen.replayed = res.headers['idempotent-replayed'] as string | undefined;
      seen.retryAfter = res.headers['retry-after'] as string | undefined;
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        seen.body += chunk;
      });
      res.on('end', () => {
        seen.complete = res.complete;
        resolve(seen);
      });
      res.on('error', (error) => {
        seen.complete = false;
        seen.error = error.message;
        resolve(seen);
      });
      res.on('aborted', () => {
        seen.complete = false;
      });
    });
    req.on('error', (error) => {
      seen.error = error.message;
      resolve(seen);
    });
    req.end('{"a":1}');
  });
}
