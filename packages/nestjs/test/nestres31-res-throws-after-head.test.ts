import 'reflect-metadata';
import { randomUUID } from 'node:crypto';
import { request as httpRequest, type ServerResponse } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import { Controller, Module, Post, Res } from '@nestjs/common';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IdempotencyModule, Idempotent } from '../src/index.js';
import { type Platform, startNest } from './scenario-app.js';

// nestres31 FINDING (HIGH, a broken response recorded as a success; found while fixing the
// handler that awaits its own response): a `@Res()` handler that wrote its head and part of its
// body and then failed (threw, or a `pipeline` into the response broke) had Nest's exception
// filter end the response (it ends one whose head went out): the part written was recorded as
// the 200 outcome, replayed to every retry, and its client took it for a complete response.
// The interceptor now aborts such a response: not recorded, the key released (the handler
// failed, a retry runs it again), and the client sees a broken response.

const runs = new Map<Platform, number>();

/** A keyed POST: the status, the body, and whether the response came whole. */
function post(url: string, key: string) {
  return new Promise<{ status: number; body: string; complete: boolean }>((resolve, reject) => {
    const req = httpRequest(`${url}/half`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'idempotency-key': key },
    });
    req.on('error', reject);
    req.on('response', (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        body += chunk;
      });
      const done = () => resolve({ status: res.statusCode ?? 0, body, complete: res.complete });
      res.on('end', done);
      res.on('error', done);
      res.on('aborted', done);
    });
    req.end('{"a":1}');
  });
}

function controllerFor(platform: Platform) {
  @Controller()
  @Idempotent()
  class HalfController {
    @Post('half')
    async half(@Res() reply: ServerResponse | { raw: ServerResponse }) {
      runs.set(platform, (runs.get(platform) ?? 0) + 1);
      const res = 'raw' in reply ? reply.raw : reply;
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.write('begun.');
      await sleep(10);
      throw new Error('failed after the head');
    }
  }
  return HalfController;
}

describe.each<Platform>(['express', 'fastify'])(
  'nestres31 @idem/nestjs on platform-%s: a @Res() handler that fails after its head',
  (platform) => {
    let url = '';
    let close = async () => {};
    beforeAll(async () => {
      @Module({
        imports: [
          IdempotencyModule.forRoot({
            store: createMemoryStore(),
            scope: 'global',
            onWarning: () => {},
          }),
        ],
        controllers: [controllerFor(platform)],
      })
      class HalfModule {}
      ({ url, close } = await startNest(platform, HalfModule));
    });
    afterAll(() => close());

    it('aborts the response, records nothing, and a retry runs the handler again', async () => {
      const key = randomUUID();
      const first = await post(url, key);
      expect([first.status, first.body, first.complete]).toEqual([200, 'begun.', false]);
      const retry = await send(url, '/half', { key, body: { a: 1 } }).catch(() => undefined);
      expect(retry?.headers['idempotent-replayed']).toBeUndefined();
      expect(runs.get(platform)).toBe(2);
    });
  },
);
