// @idem/nestjs on Fastify (and Express for comparison): a hook (onRequest, preHandler) or an
// Express middleware that puts a framing header (Content-Length, Transfer-Encoding) on the
// reply before the interceptor runs. A replay of a streamed (several-chunk) outcome, read
// off a raw socket, must be framed by the replay alone: never the hook's Content-Length
// beside a body of another length, never both Content-Length and Transfer-Encoding (RFC 9112
// 6.3: a desync or a hung client). Recorded framing headers are never replayed as they were
// (adapt-left N3).
import 'reflect-metadata';
import { randomUUID } from 'node:crypto';
import { Readable } from 'node:stream';
import { rawFraming, rawIsReplay, rawPost, rawStatusLine } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import { Controller, Module, Post, StreamableFile } from '@nestjs/common';
import type { NestExpressApplication } from '@nestjs/platform-express';
import type { NestFastifyApplication } from '@nestjs/platform-fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IdempotencyModule, Idempotent } from '../src/index.js';
import { type Platform, startNest } from './scenario-app.js';

const CHUNKS = ['alpha-', 'beta-', 'gamma-', 'delta'];
let runs = 0;

@Controller('file')
class FileController {
  @Post()
  @Idempotent()
  file() {
    runs++;
    let i = 0;
    const stream = new Readable({
      read() {
        if (i < CHUNKS.length) setTimeout(() => this.push(CHUNKS[i++]), 5);
        else this.push(null);
      },
    });
    return new StreamableFile(stream, { type: 'text/plain' });
  }

  /** A whole body (one chunk): replayed with one write and its own Content-Length. */
  @Post('json')
  @Idempotent()
  json() {
    runs++;
    return { whole: CHUNKS.join('') };
  }
}

@Module({
  imports: [IdempotencyModule.forRoot({ store: createMemoryStore(), scope: 'global' })],
  controllers: [FileController],
})
class FramingModule {}

/** A keyed POST over a raw socket (`Connection: close`), with `X-Framing`: the bytes as they came. */
const post = (url: string, path: string, key: string, framing: string) =>
  rawPost(url, path, key, '{"a":1}', `X-Framing: ${framing}\r\n`);

/** The framing a hook puts on the reply, by the request's `X-Framing`. */
function framingOf(value: unknown): [string, string] | undefined {
  if (value === 'cl') return ['content-length', '3'];
  if (value === 'te') return ['transfer-encoding', 'chunked'];
  if (value === 'cl-big') return ['content-length', '100000'];
  return undefined;
}

const setups: Array<[string, Platform, (app: unknown) => void]> = [
  [
    'fastify onRequest hook',
    'fastify',
    (app) =>
      (app as NestFastifyApplication)
        .getHttpAdapter()
        .getInstance()
        .addHook('onRequest', async (request, reply) => {
          const framing = framingOf(request.headers['x-framing']);
          if (framing) reply.header(framing[0], framing[1]);
        }),
  ],
  [
    'fastify preHandler hook',
    'fastify',
    (app) =>
      (app as NestFastifyApplication)
        .getHttpAdapter()
        .getInstance()
        .addHook('preHandler', async (request, reply) => {
          const framing = framingOf(request.headers['x-framing']);
          if (framing) reply.header(framing[0], framing[1]);
        }),
  ],
  [
    'express middleware',
    'express',
    (app) =>
      (app as NestExpressApplication).use(
        (
          request: { headers: Record<string, unknown> },
          response: { setHeader(name: string, value: string): void },
          next: () => void,
        ) => {
          const framing = framingOf(request.headers['x-framing']);
          if (framing) response.setHeader(framing[0], framing[1]);
          next();
        },
      ),
  ],
];

for (const [name, platform, configure] of setups) {
  describe(`@idem/nestjs replay framing with a ${name}`, () => {
    let url = '';
    let close = async () => {};
    beforeAll(async () => {
      ({ url, close } = await startNest(platform, FramingModule, configure as never));
    });
    afterAll(() => close());

    /** The first execution (no hook framing) and a replay with it: each framed by its own body. */
    async function replayed(path: string, framing: string, expected: string): Promise<void> {
      const key = `n3-${randomUUID()}`;
      const before = runs;
      const first = await post(url, path, key, 'none');
      expect(rawFraming(first)).toMatchObject({ body: expected, exact: true });
      const replay = await post(url, path, key, framing);
      expect(rawStatusLine(replay).toString()).toMatch(/^HTTP\/1\.1 201 /);
      expect(rawIsReplay(replay)).toBe(true);
      // One framing, never both, and the body exactly as framed.
      expect(rawFraming(replay)).toMatchObject({ body: expected, exact: true });
      expect(rawFraming(replay).framing).not.toBe('both');
      expect(runs).toBe(before + 1);
    }

    it.each(['cl', 'te', 'cl-big'])(
      'a streamed outcome replays framed by itself (hook framing %s)',
      (framing) => replayed('/file', framing, CHUNKS.join('')),
    );

    it.each(['cl', 'te', 'cl-big'])(
      'a whole (one-chunk) outcome replays framed by itself (hook framing %s)',
      (framing) => replayed('/file/json', framing, JSON.stringify({ whole: CHUNKS.join('') })),
    );
  });
}
