import { readdirSync, readFileSync } from 'node:fs';
import { createServer, request as httpRequest, type IncomingMessage } from 'node:http';
import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import { createMemoryStore } from '@idem/store-memory';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

// The CommonJS build bundles each entry point (`@idem/http`, `@idem/http/node`) with its own
// copy of the body readers and of their error classes: an error thrown by `@idem/http/node`'s
// `nodeRequestBody` (what Express, Koa and NestJS read the body with) reaches `begin` of
// `@idem/http`, which tells a 413 or a 400 from anything else with `instanceof`. A CommonJS app
// (`require('@idem/express')`, a NestJS app) got a 500 for a chunked body over `maxBodyBytes`
// and for a malformed form. Checked on the built files (run the build first).
const require = createRequire(import.meta.url);
const web = require('../dist/index.cjs') as typeof import('../src/index.js');
const node = require('../dist/node.cjs') as typeof import('../src/node.js');

const NAMES = [
  'BodyTooLargeError',
  'BodyAlreadyReadError',
  'MalformedBodyError',
  'BodyPartsLimitError',
] as const;

describe('@idem/http CommonJS build: a body error of @idem/http/node is answered by its status', () => {
  const handler = web.createIdempotencyHandler<IncomingMessage>({
    store: createMemoryStore(),
    scope: 'global',
    maxBodyBytes: 64,
    onWarning: () => {},
  });
  let runs = 0;
  const server = createServer((req, res) => {
    handler
      .begin({
        native: req,
        method: req.method ?? 'GET',
        url: node.requestUrl(req.url ?? '/'),
        header: (name) => node.headerValue(req.headers, name),
        readBody: (limit) => node.nodeRequestBody(req, undefined, limit),
      })
      .then(
        (decision) => {
          if (decision.action === 'respond') return node.sendDecisionResponse(res, decision);
          runs++;
          res.writeHead(201).end('ran');
        },
        (error: Error) => res.writeHead(500).end(`${error.name}: ${error.message}`),
      );
  });
  let port = 0;
  beforeAll(async () => {
    await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
    port = (server.address() as AddressInfo).port;
  });
  afterAll(() => new Promise<void>((ok) => server.close(() => ok())));

  /** A chunked POST (no Content-Length for `begin` to refuse it by). */
  const post = (key: string, contentType: string, body: string) =>
    new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = httpRequest(
        {
          port,
          host: '127.0.0.1',
          method: 'POST',
          path: '/orders',
          headers: { 'idempotency-key': key, 'content-type': contentType },
        },
        (res) => {
          const parts: Buffer[] = [];
          res.on('data', (part: Buffer) => parts.push(part));
          res.on('end', () =>
            resolve({ status: res.statusCode ?? 0, body: Buffer.concat(parts).toString() }),
          );
        },
      );
      req.on('error', reject);
      req.write(body);
      req.end();
    });

  it('413 for a chunked body over maxBodyBytes, 400 for a malformed form; nothing runs', async () => {
    const tooLarge = await post('big', 'application/octet-stream', 'x'.repeat(200));
    expect([tooLarge.status, tooLarge.body]).toEqual([
      413,
      expect.stringContaining('/problems/body-too-large'),
    ]);
    const malformed = await post('form', 'multipart/form-data; boundary=X', 'hello');
    expect([malformed.status, malformed.body]).toEqual([
      400,
      expect.stringContaining('/problems/malformed-body'),
    ]);
    expect(runs).toBe(0);
  });

  it('keeps instanceof exact otherwise (another class, a subclass, a look-alike)', () => {
    const classes = web as unknown as Record<string, new (...args: unknown[]) => Error>;
    for (const name of NAMES) {
      const Class = classes[name] as new (...args: unknown[]) => Error;
      const own = new Class(1);
      expect(own instanceof Class).toBe(true);
      expect(own instanceof Error).toBe(true);
      for (const other of NAMES)
        if (other !== name) expect(own instanceof (classes[other] as never)).toBe(false);
      expect(Object.assign(new Error('x'), { name }) instanceof Class).toBe(false);
      class Sub extends Class {}
      expect(own instanceof Sub).toBe(false);
      expect(new Sub(1) instanceof Class).toBe(true);
      expect(new Sub(1) instanceof Sub).toBe(true);
    }
  });

  it('the CommonJS entry points share one copy of the modules they both use (tsup splitting)', () => {
    // Each class of a shared module is defined once across dist/*.cjs, in a chunk both
    // entries require: an instanceof across them (the JSON body's fast fingerprint, the body
    // errors) then holds without any brand, as in the ESM build.
    const dist = new URL('../dist/', import.meta.url);
    const files = readdirSync(dist).filter((name) => name.endsWith('.cjs'));
    const text = (name: string) => readFileSync(new URL(name, dist), 'utf8');
    for (const shared of ['TextJsonBody', 'PreparedDecision', ...NAMES]) {
      const defining = files.filter((name) =>
        new RegExp(`\\b${shared} = (\\(_class\\d* = )?class\\b`).test(text(name)),
      );
      expect([shared, defining.length]).toEqual([shared, 1]);
      expect(defining[0]).toMatch(/^chunk-/);
    }
  });
});
