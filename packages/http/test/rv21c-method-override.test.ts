import { afterEach, describe, expect, it } from 'vitest';
import { closeAll } from './support/h2c.js';
import { serveBoth } from './support/rv21c-loopback.js';

// rv21c (adversarial review of the method-override fingerprint): a framework behind idem that
// honours an override header runs another method; two requests under one key that may run
// different methods are never one replay. A request without an override keeps the
// fingerprint it always had. Real node:http and h2c servers on loopback.

afterEach(closeAll);

async function start() {
  return serveBoth((req, res) => {
    const override = req.headers['x-http-method-override'];
    res.writeHead(201, { 'content-type': 'text/plain' });
    res.end(`ran ${String(override ?? req.method)}`);
  });
}

describe('rv21c @idem/http: override headers and one key', () => {
  it.each([
    ['another name case, another value case, whitespace', ['X-HTTP-METHOD-OVERRIDE', ' delete ']],
    ['the value in lower case', ['x-http-method-override', 'delete']],
  ])('%s: the same effective method, replayed', async (_name, raw) => {
    const app = await start();
    const first = await app.h1('/items/1', 'mo-1', ['x-http-method-override', 'DELETE']);
    expect([first.status, first.body.toString()]).toEqual([201, 'ran DELETE']);
    const retry = await app.h1('/items/1', 'mo-1', raw);
    expect(retry.status).toBe(201);
    expect(retry.headers['idempotent-replayed']).toBe('true');
    expect(app.runs()).toBe(1);
  });

  it.each([
    ['another override', ['x-http-method-override', 'PATCH']],
    ['no override (a plain POST)', []],
    ['the override as another header', ['x-http-method', 'PATCH']],
    [
      'two fields, DELETE then PATCH',
      ['x-http-method-override', 'DELETE', 'x-http-method-override', 'PATCH'],
    ],
    ['a comma list', ['x-http-method-override', 'PATCH, DELETE']],
    ['X-Method-Override: PUT', ['x-method-override', 'PUT']],
  ])('a DELETE override, then %s: 422, never the DELETE replay', async (_name, raw) => {
    const app = await start();
    await app.h1('/items/1', 'mo-2', ['x-http-method-override', 'DELETE']);
    const other = await app.h1('/items/1', 'mo-2', raw);
    expect(other.status).toBe(422);
    expect(other.headers['idempotent-replayed']).toBeUndefined();
    expect(app.runs()).toBe(1);
  });

  it('a plain POST, then overrides that name no other method: replayed (the old fingerprint)', async () => {
    const app = await start();
    expect((await app.h1('/items/1', 'mo-3')).status).toBe(201);
    for (const raw of [
      ['x-http-method-override', 'POST'],
      ['x-http-method-override', 'post'],
      ['x-http-method', ' POST '],
      ['x-method-override', ''],
      ['x-http-method-override', '   '],
    ]) {
      const retry = await app.h1('/items/1', 'mo-3', raw);
      expect([retry.status, retry.headers['idempotent-replayed']]).toEqual([201, 'true']);
    }
    expect(app.runs()).toBe(1);
  });

  it('over HTTP/2: a DELETE override then a PATCH override is 422', async () => {
    const app = await start();
    expect((await app.h2('/items/1', 'mo-4', { 'x-http-method-override': 'DELETE' })).status).toBe(
      201,
    );
    expect((await app.h2('/items/1', 'mo-4', { 'x-http-method-override': 'PATCH' })).status).toBe(
      422,
    );
    expect(
      (await app.h2('/items/1', 'mo-4', { 'x-http-method-override': 'delete' })).headers[
        'idempotent-replayed'
      ],
    ).toBe('true');
  });
});
