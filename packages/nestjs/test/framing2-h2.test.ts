// @idem/nestjs over HTTP/2 (h2c): Nest serves HTTP/2 on the Fastify platform only
// (`new FastifyAdapter({ http2: true })`; the Express platform's `initHttpServer` makes an
// http or https server). A hook that puts a framing header (Content-Length, a
// Transfer-Encoding, chunked or not) on the reply or on the Node response under it before the
// interceptor: a replay, streamed or whole, comes whole with no Transfer-Encoding (a
// connection header in HTTP/2) and no Content-Length of another body (framing2).
import 'reflect-metadata';
import { randomUUID } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { Readable } from 'node:stream';
import { framingAppOptions, h2Post } from '@idem/http-conformance';
import {
  Controller,
  HttpCode,
  type INestApplication,
  Module,
  Post,
  StreamableFile,
} from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { FastifyAdapter, type NestFastifyApplication } from '@nestjs/platform-fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IdempotencyModule, Idempotent } from '../src/index.js';

let runs = 0;

@Controller()
class H2FramingController {
  @Post('stream')
  @HttpCode(200)
  @Idempotent()
  stream() {
    runs++;
    const chunks = ['alpha-', 'beta-', 'gamma'];
    const body = new Readable({
      read() {
        const chunk = chunks.shift();
        if (chunk === undefined) this.push(null);
        else setTimeout(() => this.push(chunk), 5);
      },
    });
    return new StreamableFile(body, { type: 'text/plain' });
  }

  @Post('whole')
  @HttpCode(200)
  @Idempotent()
  whole() {
    runs++;
    return { whole: 'whole-body' };
  }
}

@Module({
  imports: [IdempotencyModule.forRoot(framingAppOptions())],
  controllers: [H2FramingController],
})
class H2FramingModule {}

/** What the hook sets, by the request's `x-framing`: [where, name, value]. */
const FRAMINGS: Record<string, ['reply' | 'raw', string, string]> = {
  'te-chunked': ['reply', 'transfer-encoding', 'chunked'],
  'te-gzip': ['reply', 'transfer-encoding', 'gzip'],
  'raw-te-chunked': ['raw', 'transfer-encoding', 'chunked'],
  'raw-te-gzip': ['raw', 'transfer-encoding', 'gzip, chunked'],
  cl: ['reply', 'content-length', '3'],
  'raw-cl': ['raw', 'content-length', '100000'],
};

describe('@idem/nestjs on Fastify over HTTP/2: a replay under a hook framing header', () => {
  let app: INestApplication;
  let url = '';
  beforeAll(async () => {
    app = await NestFactory.create(H2FramingModule, new FastifyAdapter({ http2: true }), {
      logger: false,
      abortOnError: false,
    });
    (app as NestFastifyApplication)
      .getHttpAdapter()
      .getInstance()
      .addHook('onRequest', async (request, reply) => {
        const framing = FRAMINGS[String(request.headers['x-framing'])];
        if (!framing) return;
        const [where, name, value] = framing;
        if (where === 'raw') reply.raw.setHeader(name, value);
        else reply.header(name, value);
      });
    await app.listen(0, '127.0.0.1');
    url = `http://127.0.0.1:${(app.getHttpServer().address() as AddressInfo).port}`;
  });
  afterAll(() => app.close());

  for (const [path, body] of [
    ['/stream', 'alpha-beta-gamma'],
    ['/whole', JSON.stringify({ whole: 'whole-body' })],
  ] as const) {
    it.each(Object.keys(FRAMINGS))(`${path}: hook framing %s`, async (framing) => {
      const key = `framing2-h2-${randomUUID()}`;
      const before = runs;
      const first = await h2Post(url, path, key);
      expect([first.status, first.body, first.hung]).toEqual([200, body, false]);
      const replay = await h2Post(url, path, key, { 'x-framing': framing });
      expect([replay.status, replay.body, replay.hung]).toEqual([200, body, false]);
      expect(replay.headers['idempotent-replayed']).toBe('true');
      expect(replay.headers['transfer-encoding']).toBeUndefined();
      const length = replay.headers['content-length'];
      if (length !== undefined) expect(Number(length)).toBe(Buffer.byteLength(body, 'latin1'));
      expect(runs).toBe(before + 1);
    });
  }
});
