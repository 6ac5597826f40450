// client31: a keyed event stream from an idem server (it names its Idempotent-Generation) is
// handed to the caller wrapped, so that a break resumes; the wrapper was a `new Response`, whose
// `url` is '' and `type` 'default', where every other response of this client (fetch's own, or
// a 409's rebuilt copy) keeps fetch's. Code that reads `response.url` (to log it, or to resolve
// a relative link against it: `new URL(link, response.url)` throws on '') broke on exactly the
// responses that resume. Now the wrapper keeps them; the resume itself still works.
import { afterEach, describe, expect, it } from 'vitest';
import { createIdempotentFetch, getIdempotencyInfo } from '../src/index.js';
import { breakingEventStream, type RawServer, startRawServer } from './clirev-server.js';

let server: RawServer | undefined;
afterEach(async () => {
  await server?.close();
  server = undefined;
});

describe('client31: the url of a resumable event stream', () => {
  it("keeps fetch's url and type, and still resumes a break", async () => {
    // The first event, then the connection drops mid-stream; the resume: the rest after event 1.
    server = await startRawServer(breakingEventStream);
    const idemFetch = createIdempotentFetch({ minDelayMs: 1, initialDelayMs: 1 });
    const url = `${server.url}/v1/chat/completions?stream=1`;
    const response = await idemFetch(url, { method: 'POST', body: '{"stream":true}' });
    expect(response.url).toBe(url);
    expect(response.type).toBe('basic');
    expect(response.redirected).toBe(false);
    expect(new URL('/next', response.url).href).toBe(`${server.url}/next`);
    expect(getIdempotencyInfo(response)?.key).toBeDefined();
    expect(await response.text()).toBe('id: 1\ndata: a\n\nid: 2\ndata: b\n\n');
    expect(server.seen).toHaveLength(2);
    expect(server.seen[1]?.headers['last-event-id']).toBe('1');
    expect(server.seen[1]?.headers['idempotency-key']).toBe(
      server.seen[0]?.headers['idempotency-key'],
    );
  });
});
