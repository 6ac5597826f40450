import { createServer, type ServerResponse } from 'node:http';
import { listening, type RunningApp, send, spyStore } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import { afterEach, describe, expect, it } from 'vitest';
import { createIdempotencyHandler, type ResponsePolicy } from '../src/index.js';
import { headersOf, recordServerResponse, requestUrl } from '../src/node.js';
import { pickRecordedHeaders, resolveRecordedHeaders } from '../src/recorded-headers.js';

// recordServerResponse reads the head from Node's outgoing headers without building a Web
// Headers (unless the policy reads them): what it records must be exactly what the pairs of
// `headersOf` gave, whatever way the app set its headers.

const apps: RunningApp[] = [];
afterEach(async () => {
  await Promise.all(apps.splice(0).map((app) => app.close()));
});

type Head = (res: ServerResponse) => unknown[];

/** Ways an app sets headers: `setHeader`s, then the arguments it gives `writeHead`. */
const heads: Record<string, Head> = {
  'setHeader, arrays, whitespace, a writeHead object': (res) => {
    res.setHeader('Content-Type', 'application/json');
    res.setHeader('ETag', ' "x" ');
    res.setHeader('Link', ['<a>; rel=x', '<b>; rel=y']);
    res.setHeader('Vary', 'a');
    res.setHeader('Content-Length', 2);
    return [201, { 'Cache-Control': 'no-store', VARY: ['b', 'c'], 'x-other': 1 }];
  },
  'a flat writeHead array': (res) => {
    res.setHeader('location', '/old');
    return [200, ['Content-Type', 'text/plain', 'Location', '/x']];
  },
  'a writeHead array, with a reason phrase': (res) => {
    res.setHeader('content-language', 'fr');
    return [200, 'Fine', ['content-language', 'en', 'Expires', '0']];
  },
  'setHeader only': (res) => {
    res.setHeader('content-disposition', '\tattachment ');
    res.setHeader('retry-after', 5);
    res.statusCode = 202;
    return [];
  },
};

const allowed = resolveRecordedHeaders(undefined);

async function record(head: Head, isFinal?: ResponsePolicy) {
  const spied = spyStore(createMemoryStore());
  const idem = createIdempotencyHandler({
    store: spied.store,
    scope: 'global',
    onWarning: () => {},
    ...(isFinal ? { isFinal } : {}),
  });
  let expected: [string, string][] = [];
  const server = createServer(async (req, res) => {
    const decision = await idem.begin({
      native: req as unknown as Request,
      method: req.method ?? 'GET',
      url: requestUrl(req.url ?? '/'),
      header: (name) => (name === 'idempotency-key' ? 'k' : undefined),
      readBody: async () => ({ kind: 'none' }),
    });
    if (decision.action !== 'execute') throw new Error(decision.action);
    recordServerResponse(res, decision.recorder);
    const args = head(res);
    const extra = typeof args[1] === 'string' ? args[2] : args[1];
    // What the recorder recorded before it read Node's headers directly.
    expected = pickRecordedHeaders(headersOf(res, extra), allowed);
    if (args.length > 0) (res.writeHead as (...rest: unknown[]) => void)(...args);
    res.end('{}');
  });
  server.listen(0, '127.0.0.1');
  const running = await listening(server);
  apps.push(running);
  const answer = await send(running.url, '/', { key: 'k', body: {} });
  expect(answer.complete).toBe(true);
  return { expected, recorded: spied.completed[0]?.meta.headers };
}

describe('recordServerResponse reads the head as headersOf did', () => {
  for (const [name, head] of Object.entries(heads)) {
    it(`records the allowlisted headers of ${name}`, async () => {
      const plain = await record(head);
      expect(plain.expected.length).toBeGreaterThan(0);
      expect(plain.recorded).toEqual(plain.expected);
      // A policy that reads the headers sees them all, and the same pairs are recorded.
      let seen: [string, string][] = [];
      const reading = await record(head, ({ headers }) => {
        seen = [...headers];
        return true;
      });
      expect(reading.recorded).toEqual(plain.expected);
      expect(seen.length).toBeGreaterThanOrEqual(plain.expected.length);
    });
  }
});
