import { request } from 'node:http';
import { generateKey } from '@idem/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../src/config.js';
import { type RunningServer, startServer } from '../src/server.js';
import { answer } from './answers.js';
import type { UsageJson } from './stack.js';

/** Far more than any answer here needs: a request held longer fails the test. */
const BOUND_MS = 5_000;
const MiB = 1_048_576;

/**
 * POSTs a chat body of about `size` bytes with node:http, chunked (no Content-Length) or
 * with its length declared. node:http hands over the answer even while the body is still
 * being written (fetch fails the call when the server answers early and closes). Stops
 * writing once the answer came; rejects past `BOUND_MS`.
 */
function postLarge(
  url: string,
  headers: Record<string, string>,
  size: number,
  chunked: boolean,
): Promise<{ status: number; contentType: string | undefined }> {
  const head = '{"model":"m","messages":[{"role":"user","content":"';
  const tail = '"}]}';
  const pieces = Math.ceil(size / (64 * 1024));
  const length = head.length + pieces * 64 * 1024 + tail.length;
  return new Promise((resolve, reject) => {
    const piece = Buffer.alloc(64 * 1024, 'a');
    let answered = false;
    const req = request(url, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        ...headers,
        ...(chunked ? {} : { 'content-length': String(length) }),
      },
    });
    const timer = setTimeout(() => {
      req.destroy();
      reject(new Error(`POST ${url} got no answer within ${BOUND_MS} ms`));
    }, BOUND_MS);
    req.on('response', (response) => {
      answered = true;
      clearTimeout(timer);
      response.resume();
      resolve({ status: response.statusCode ?? 0, contentType: response.headers['content-type'] });
      req.destroy();
    });
    req.on('error', (error) => {
      if (!answered) {
        clearTimeout(timer);
        reject(error);
      }
    });
    req.write(head);
    let sent = 0;
    const write = () => {
      while (!answered && sent < pieces) {
        sent += 1;
        if (!req.write(piece)) return void req.once('drain', write);
      }
      if (!answered) req.end(tail);
    };
    write();
  });
}

describe('request bodies a hostile client sends', () => {
  let server: RunningServer;
  beforeAll(async () => {
    server = await startServer(parseConfig({ PORT: '0', MODEL_CHUNK_DELAY_MS: '0' }));
  });
  afterAll(async () => {
    await server?.close();
  });

  const started = async () =>
    ((await (await fetch(`${server.url}/v1/usage`)).json()) as UsageJson).model_executions.started;
  const send = (path: string, body: string, headers: Record<string, string> = {}) =>
    answer(
      `${server.url}${path}`,
      { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body },
      BOUND_MS,
    );

  it.each([
    ['/v1/chat/completions without a key, with Content-Length', '/v1/chat/completions', false, {}],
    ['/v1/chat/completions without a key, chunked', '/v1/chat/completions', true, {}],
    ['/api/messages with a key, chunked', '/api/messages', true, { 'idempotency-key': 'big' }],
  ])(
    'a body over 1 MiB (%s) gets 413 at once, unread past the limit and not executed',
    async (_name, path, chunked, headers) => {
      const before = await started();
      const keyed: Record<string, string> =
        'idempotency-key' in headers ? { 'idempotency-key': generateKey() } : {};
      const got = await postLarge(`${server.url}${path}`, keyed, 2 * MiB, chunked);
      expect({ status: got.status, type: got.contentType }).toEqual({
        status: 413,
        type: expect.stringMatching(/^application\/problem\+json/),
      });
      expect(await started()).toBe(before);
    },
  );

  it.each([
    ['/api/messages', { prompt: 'deep', model: 'm' }],
    ['/v1/chat/completions', { model: 'm', messages: [{ role: 'user', content: 'deep' }] }],
  ])(
    'JSON nested 20,000 deep on %s gets 400 (not 500), and the key then works',
    async (path, good) => {
      const key = generateKey();
      const deep = JSON.stringify({ ...good, extra: 0 }).replace(
        '0}',
        `${'['.repeat(20_000)}${']'.repeat(20_000)}}`,
      );
      const got = await send(path, deep, { 'idempotency-key': key });
      expect(got.status).toBe(400);
      expect(JSON.parse(got.body)).toMatchObject({ error: { type: 'invalid_request_error' } });
      const retried = await send(path, JSON.stringify(good), { 'idempotency-key': key });
      expect(retried.status).toBeLessThan(300);
    },
  );
});

describe('a model name is echoed in every answer (every streamed chunk)', () => {
  let server: RunningServer;
  beforeAll(async () => {
    server = await startServer(parseConfig({ PORT: '0', MODEL_CHUNK_DELAY_MS: '0' }));
  });
  afterAll(async () => {
    await server?.close();
  });

  it.each([
    ['/api/messages', { prompt: 'amplified' }],
    ['/v1/chat/completions', { stream: true, messages: [{ role: 'user', content: 'amplified' }] }],
  ])(
    'so a huge one on %s gets 400: a 900 KB request must not become a recorded 17 MB answer',
    async (path, rest) => {
      const got = await answer(
        `${server.url}${path}`,
        {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'idempotency-key': generateKey() },
          body: JSON.stringify({ model: 'm'.repeat(900_000), ...rest }),
        },
        BOUND_MS,
      );
      expect({ status: got.status, bytes: got.body.length < 10_000 }).toEqual({
        status: 400,
        bytes: true,
      });
      expect(JSON.parse(got.body)).toMatchObject({ error: { type: 'invalid_request_error' } });
    },
  );
});
