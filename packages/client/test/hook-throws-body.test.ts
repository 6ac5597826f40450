// A caller's isRetryableStatus that throws ends the call with its error, and the answer's
// body, which nobody will read, is let go: its connection is closed, not held open for as
// long as the server keeps streaming. A real node:http server on loopback whose answers
// send a first chunk and then never end.
import { once } from 'node:events';
import { createServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { createIdempotentFetch } from '../src/index.js';

const servers: Array<{ close: () => void }> = [];
afterEach(() => {
  for (const server of servers.splice(0)) server.close();
});

/** A server answering `status` with a body that never ends; `closed` counts answers ended by the client. */
async function stalledAnswers(status: number, headers: Record<string, string> = {}) {
  const open = new Set<ServerResponse>();
  let closed = 0;
  const server = createServer((req, res) => {
    req.resume();
    res.writeHead(status, { 'content-type': 'application/problem+json', ...headers });
    res.write('{"type":');
    open.add(res);
    res.on('close', () => {
      open.delete(res);
      closed++;
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  servers.push({
    close: () => {
      for (const res of open) res.destroy();
      server.closeAllConnections();
      server.close();
    },
  });
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}/charges`, closed: () => closed, open: () => open.size };
}

async function waitFor(check: () => boolean, ms = 3_000): Promise<boolean> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (check()) return true;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return check();
}

describe('a throwing isRetryableStatus', () => {
  for (const status of [503, 500]) {
    it(`${status}: the call rejects with the hook's error and the unread body's connection is closed`, async () => {
      const server = await stalledAnswers(status);
      const bug = new Error('hook bug');
      const idemFetch = createIdempotentFetch({
        isRetryableStatus: () => {
          throw bug;
        },
        sleep: async () => {},
      });
      const call = idemFetch(server.url, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: '{"amount":1}',
      });
      // A 500 first has its problem body peeked (bounded by the attempt limit): the hook is
      // asked before that read, so no wait for a body that never ends.
      await expect(call).rejects.toBe(bug);
      expect(await waitFor(() => server.closed() === 1 && server.open() === 0)).toBe(true);
    });
  }
});
