// @idem/nestjs on Fastify (and Express for comparison): a hook (onRequest, preHandler) or an
// Express middleware that puts a framing header (Content-Length, Transfer-Encoding) on the
// reply before the interceptor runs. A replay of a streamed (several-chunk) outcome, read
// off a raw socket, must be framed by the replay alone: never the hook's Content-Length
// beside a body of another length, never both Content-Length and Transfer-Encoding (RFC 9112
// 6.3: a desync or a hung client). Recorded framing headers are never replayed as they were
// (adapt-left N3).
import 'reflect-metadata';
import { randomUUID } from 'node:crypto';
import { connect } from 'node:net';
import { Readable } from 'node:stream';
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

interface Raw {
  head: string;
  headers: Map<string, string[]>;
  body: Buffer;
}

/** A keyed POST over a raw socket (`Connection: close`): the bytes as they came, the head parsed. */
function rawPost(url: string, key: string, framing: string, path = '/file'): Promise<Raw> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), hostname);
    const parts: Buffer[] = [];
    const timer = setTimeout(
      () => socket.destroy(new Error('no end within 3 s (a hung client)')),
      3_000,
    );
    socket.on('data', (chunk: Buffer) => parts.push(chunk));
    socket.on('error', reject);
    socket.on('close', () => {
      clearTimeout(timer);
      const all = Buffer.concat(parts);
      const split = all.indexOf('\r\n\r\n');
      const head = all.subarray(0, split).toString('latin1');
      const headers = new Map<string, string[]>();
      for (const line of head.split('\r\n').slice(1)) {
        const colon = line.indexOf(':');
        const name = line.slice(0, colon).trim().toLowerCase();
        headers.set(name, [...(headers.get(name) ?? []), line.slice(colon + 1).trim()]);
      }
      resolve({ head, headers, body: all.subarray(split + 4) });
    });
    socket.write(
      `POST ${path} HTTP/1.1\r\nHost: ${hostname}\r\nIdempotency-Key: ${key}\r\nX-Framing: ${framing}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`,
    );
  });
}

/** The body of a raw response as its head frames it (chunked decoded; else its Content-Length). */
function framedBody(raw: Raw): { body: string; exact: boolean } {
  const te = raw.headers.get('transfer-encoding');
  const cl = raw.headers.get('content-length');
  if (te) {
    let rest = raw.body;
    let body = '';
    for (;;) {
      const eol = rest.indexOf('\r\n');
      const size = Number.parseInt(rest.subarray(0, eol).toString(), 16);
      if (Number.isNaN(size)) return { body, exact: false };
      if (size === 0) return { body, exact: rest.length === eol + 4 };
      body += rest.subarray(eol + 2, eol + 2 + size).toString();
      rest = rest.subarray(eol + 2 + size + 2);
    }
  }
  // Neither: the body ends with the connection.
  if (!cl) return { body: raw.body.toString(), exact: true };
  const length = Number(cl[0]);
  return { body: raw.body.subarray(0, length).toString(), exact: raw.body.length === length };
}

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

    it.each(['cl', 'te', 'cl-big'])(
      'a streamed outcome replays framed by itself (hook framing %s)',
      async (framing) => {
        const key = `n3-${randomUUID()}`;
        const before = runs;
        // The first execution without the hook's framing: the stream is recorded.
        const first = await rawPost(url, key, 'none');
        expect(framedBody(first)).toEqual({ body: CHUNKS.join(''), exact: true });
        const replay = await rawPost(url, key, framing);
        expect(replay.head).toMatch(/^HTTP\/1\.1 201 /);
        expect(replay.headers.get('idempotent-replayed')).toEqual(['true']);
        // One framing, never both, and the body exactly as framed.
        expect(
          replay.headers.has('content-length') && replay.headers.has('transfer-encoding'),
        ).toBe(false);
        expect((replay.headers.get('content-length') ?? []).length).toBeLessThanOrEqual(1);
        expect(framedBody(replay)).toEqual({ body: CHUNKS.join(''), exact: true });
        expect(runs).toBe(before + 1);
      },
    );

    it.each(['cl', 'te', 'cl-big'])(
      'a whole (one-chunk) outcome replays framed by itself (hook framing %s)',
      async (framing) => {
        const key = `n3-json-${randomUUID()}`;
        const before = runs;
        const whole = JSON.stringify({ whole: CHUNKS.join('') });
        const first = await rawPost(url, key, 'none', '/file/json');
        expect(framedBody(first)).toEqual({ body: whole, exact: true });
        const replay = await rawPost(url, key, framing, '/file/json');
        expect(replay.headers.get('idempotent-replayed')).toEqual(['true']);
        expect(
          replay.headers.has('content-length') && replay.headers.has('transfer-encoding'),
        ).toBe(false);
        expect(framedBody(replay)).toEqual({ body: whole, exact: true });
        expect(runs).toBe(before + 1);
      },
    );
  });
}
