// rev31a (review of client31): a resumable event stream (and a 409's rebuilt copy) is handed
// back as a `new Response` that keeps fetch's `url`, `redirected` and `type` as own
// properties. `response.clone()` copies only the platform's internal state, where the copy has
// no URL: the clone's `url` was '' and its `type` 'default', the defect client31 fixed for the
// response itself (a clone to log or read twice, `new URL(link, clone.url)` throws). The clone
// keeps them too, and cloning still tees the resumed body, `bodyUsed` as the platform's.
import { afterEach, describe, expect, it } from 'vitest';
import { createIdempotentFetch } from '../src/index.js';
import { breakingEventStream, type RawServer, startRawServer } from './clirev-server.js';

let server: RawServer | undefined;
afterEach(async () => {
  await server?.close();
  server = undefined;
});

describe('rev31a: clone() of a response the client rebuilt', () => {
  it('a resumable event stream: the clone keeps url and type, both read the resumed body', async () => {
    server = await startRawServer(breakingEventStream);
    const idemFetch = createIdempotentFetch({ minDelayMs: 1, initialDelayMs: 1 });
    const url = `${server.url}/v1/chat/completions?stream=1`;
    const response = await idemFetch(url, { method: 'POST', body: '{"stream":true}' });
    const copy = response.clone();
    expect(copy).toBeInstanceOf(Response);
    expect(copy.url).toBe(url);
    expect(copy.type).toBe('basic');
    expect(copy.redirected).toBe(false);
    expect(new URL('/next', copy.url).href).toBe(`${server.url}/next`);
    // A clone of the clone as well.
    expect(copy.clone().url).toBe(url);
    expect(response.bodyUsed).toBe(false);
    const [a, b] = await Promise.all([response.text(), copy.text()]);
    const whole = 'id: 1\ndata: a\n\nid: 2\ndata: b\n\n';
    expect(a).toBe(whole);
    expect(b).toBe(whole);
    expect(response.bodyUsed).toBe(true);
    expect(copy.bodyUsed).toBe(true);
    expect(() => response.clone()).toThrow(TypeError);
    expect(server.seen).toHaveLength(2);
  });

  it('a 409 in progress handed back rebuilt: its clone keeps its url', async () => {
    server = await startRawServer((seen, res) => {
      if (seen.n === 1) {
        res.writeHead(409, {
          'content-type': 'application/problem+json',
          'retry-after': '0',
        });
        res.end(
          JSON.stringify({ type: 'https://idem.dev/problems/in-progress', title: 'In progress' }),
        );
        return;
      }
      res.end('done');
    });
    const idemFetch = createIdempotentFetch({
      minDelayMs: 1,
      initialDelayMs: 1,
      inProgressWaitMs: 0,
    });
    const url = `${server.url}/charges`;
    const response = await idemFetch(url, { method: 'POST', body: 'x' });
    // inProgressWaitMs 0: the 409 is handed back, rebuilt (its head was read to know it).
    expect(response.status).toBe(409);
    expect(server.seen).toHaveLength(1);
    const copy = response.clone();
    expect(copy.url).toBe(url);
    expect(copy.type).toBe(response.type);
    await copy.text();
    await response.text();
  });
});
