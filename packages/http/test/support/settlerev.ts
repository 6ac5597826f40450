import { type IncomingMessage, request } from 'node:http';
import { createMemoryStore } from '@idem/store-memory';
import { keyedPost } from './h2c.js';

// Shared by the settlerev review's tests (a keyed POST over its own HTTP/1.1 connection, and
// a store whose first completion finds its record deleted).

/** An answer as an HTTP/1.1 client got it. */
export interface H1Answer {
  status: number;
  headers: IncomingMessage['headers'];
  body: string;
  trailers: IncomingMessage['trailers'];
}

/** A keyed POST (body `b`) on its own connection; `onFirst` runs at the first body chunk. */
export function h1Post(port: number, key: string, onFirst?: () => void): Promise<H1Answer> {
  return new Promise((resolve, reject) => {
    const req = request(keyedPost(port, key));
    req.on('error', reject);
    req.on('response', (res) => {
      const parts: Buffer[] = [];
      res.on('data', (chunk: Buffer) => {
        if (parts.length === 0) onFirst?.();
        parts.push(chunk);
      });
      res.on('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          body: Buffer.concat(parts).toString(),
          trailers: res.trailers,
        }),
      );
      res.on('error', reject);
    });
    req.end('b');
  });
}

/**
 * A memory store whose first completion fails: an operator deletes the record while its
 * execution runs, so the completion finds its lease gone (not an outage to retry).
 */
export function firstCompletionFails() {
  const store = createMemoryStore();
  let fail = true;
  return Object.assign(Object.create(store), {
    complete: async (input: Parameters<typeof store.complete>[0]) => {
      if (fail) await store.admin.delete(input.key);
      fail = false;
      return store.complete(input);
    },
  }) as typeof store;
}
