import 'reflect-metadata';
import { randomUUID } from 'node:crypto';
import { type AddressInfo, connect } from 'node:net';
import { createMemoryStore } from '@idem/store-memory';
import {
  type ArgumentsHost,
  Body,
  type CanActivate,
  Catch,
  Controller,
  type ExceptionFilter,
  type ExecutionContext,
  HttpException,
  type HttpServer,
  type INestApplication,
  Module,
  Post,
  UseGuards,
} from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { ExpressAdapter } from '@nestjs/platform-express';
import { FastifyAdapter } from '@nestjs/platform-fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IdempotencyModule, Idempotent } from '../src/index.js';
import { count, ran } from './review-kit.js';
import { type Platform, TenantGuard } from './scenario-app.js';

// keptrev: attacks on 9ca64cd (NestJS-on-Fastify's kept rawBody through keptBytesBody) and
// 5958365 on NestJS-on-Express (req.rawBody), rawBody: true, real Nest on loopback, requests
// written on a raw socket so the framing headers are exactly as given.

const FORM = 'Content-Type: application/x-www-form-urlencoded';
const ONE = Buffer.from('to=alice&amount=1');
const OTHER = Buffer.from('to=alice&amount=9999');

/** With `x-kept`, puts something else where Nest kept the bytes (a guard runs before idem). */
class KeptGuard implements CanActivate {
  canActivate(context: ExecutionContext): boolean {
    const request = context
      .switchToHttp()
      .getRequest<{ headers: Record<string, unknown>; rawBody?: unknown }>();
    const kept = request.rawBody;
    const how = request.headers['x-kept'];
    if (!Buffer.isBuffer(kept)) return true;
    if (how === 'prefix') request.rawBody = Buffer.from(kept.subarray(0, 8));
    else if (how === 'proxy') request.rawBody = new Proxy(kept, {});
    else if (how === 'uint8') request.rawBody = new Uint8Array(kept);
    return true;
  }
}

@Catch()
class NameFilter implements ExceptionFilter {
  constructor(private readonly adapter: HttpServer) {}
  catch(error: Error, host: ArgumentsHost): void {
    const response = host.switchToHttp().getResponse();
    if (error instanceof HttpException)
      this.adapter.reply(response, error.getResponse(), error.getStatus());
    else this.adapter.reply(response, { name: error.name, message: error.message }, 500);
  }
}

@Controller()
@UseGuards(TenantGuard, KeptGuard)
class KeptrevController {
  @Post('keptrev')
  @Idempotent()
  pay(@Body() body: unknown) {
    return { n: ran('keptrev'), body: body ?? null };
  }
}

@Module({
  imports: [IdempotencyModule.forRoot({ store: createMemoryStore(), onWarning: () => {} })],
  controllers: [KeptrevController],
})
class KeptrevModule {}

async function start(platform: Platform): Promise<INestApplication> {
  const options = { logger: false as const, abortOnError: false, rawBody: true };
  const app =
    platform === 'express'
      ? await NestFactory.create(KeptrevModule, new ExpressAdapter(), options)
      : await NestFactory.create(KeptrevModule, new FastifyAdapter(), options);
  app.useGlobalFilters(new NameFilter(app.getHttpAdapter()));
  await app.listen(0, '127.0.0.1');
  return app;
}

interface Reply {
  status: number;
  replayed: boolean;
  body: string;
}

function send(app: INestApplication, lines: string[], body: Buffer): Promise<Reply> {
  const { port } = app.getHttpServer().address() as AddressInfo;
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    socket.setTimeout(5000, () => socket.destroy(new Error('timed out')));
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', reject);
    socket.on('close', () => {
      const all = Buffer.concat(chunks);
      const split = all.indexOf('\r\n\r\n');
      const head = all.subarray(0, split < 0 ? all.length : split).toString('latin1');
      resolve({
        status: Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1] ?? 0),
        replayed: /\r\nidempotent-replayed:/i.test(head),
        body: split < 0 ? '' : all.subarray(split + 4).toString(),
      });
    });
    socket.write(
      Buffer.concat([
        Buffer.from(
          `POST /keptrev HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nx-tenant: tenant-a\r\n${lines.map((l) => `${l}\r\n`).join('')}\r\n`,
          'latin1',
        ),
        body,
      ]),
    );
  });
}

const key = () => `Idempotency-Key: ${randomUUID()}`;
const length = (body: Buffer) => `Content-Length: ${body.length}`;

describe.each<Platform>(['express', 'fastify'])('keptrev nest on %s, rawBody: true', (platform) => {
  let app: INestApplication;
  beforeAll(async () => {
    app = await start(platform);
  });
  afterAll(async () => {
    await app.close();
  });

  async function expectTold(one: [string[], Buffer], two: [string[], Buffer]) {
    const k = key();
    const before = count('keptrev');
    const first = await send(app, [k, ...one[0]], one[1]);
    expect(first.status).toBe(201);
    const other = await send(app, [k, ...two[0]], two[1]);
    expect([other.status, other.replayed]).toEqual([422, false]);
    expect(count('keptrev')).toBe(before + 1);
  }

  it('held: a prefix kept with Content-Length 17, 017, identity, IDENTITY: refused, nothing run', async () => {
    const before = count('keptrev');
    for (const lines of [
      [length(ONE)],
      ['Content-Length: 017'],
      [length(ONE), 'Content-Encoding: identity'],
      [length(ONE), 'Content-Encoding: IDENTITY'],
    ]) {
      const r = await send(app, [key(), FORM, 'x-kept: prefix', ...lines], ONE);
      expect([r.status, r.replayed]).toEqual([500, false]);
      expect(JSON.parse(r.body)).toMatchObject({ name: 'BodyAlreadyReadError' });
      expect(JSON.parse(r.body).message).toMatch(/are 8 where 17 were sent/);
    }
    expect(count('keptrev')).toBe(before);
  });

  // FINDING (LOW, fixed: an empty Content-Encoding is identity): an empty Content-Encoding switches the check off. Express: body-parser
  // reads `'' || 'identity'` as identity; Fastify never looks at Content-Encoding. Either
  // way the kept bytes are counted by the Content-Length, but declaredLength measures only
  // a missing or literal `identity` encoding, so Nest's kept bytes cut to a prefix (the
  // formrev2 model) make "to=alice&amount=1" and "to=alice&amount=9999" one request: the
  // second is replayed the first's 201 instead of 422. Fix: empty Content-Encoding =
  // identity in declaredLength.
  it('Content-Encoding: (empty), a prefix kept: refused or told apart', async () => {
    // Refused now, as without the header: both 500 under one key, nothing run or replayed.
    const k = key();
    const before = count('keptrev');
    for (const body of [ONE, OTHER]) {
      const r = await send(
        app,
        [k, FORM, 'x-kept: prefix', length(body), 'Content-Encoding:'],
        body,
      );
      expect([r.status, r.replayed]).toEqual([500, false]);
    }
    expect(count('keptrev')).toBe(before);
  });

  if (platform === 'fastify') {
    // Was FINDING (LOW), fixed (the tapped bytes, taken as sent when they do not inflate):
    // Fastify does not inflate request bodies (without @fastify/compress):
    // a plain form labelled `Content-Encoding: gzip` is parsed as it is, and Fastify itself
    // holds the bytes to the Content-Length. The check's reason for skipping an encoded body
    // (its count is not the inflated bytes') does not apply here, yet it is skipped: the
    // prefix-kept pair is replayed (201) instead of 422. Fix: on Fastify (Nest's keptBytesBody
    // call), measure whatever the Content-Encoding says unless a preParsing hook replaced
    // the payload (or: measure always when the kept bytes are Fastify's raw payload).
    it('Content-Encoding: gzip on a plain form (Fastify parses it as is): a prefix refused or told apart', async () => {
      await expectTold(
        [[FORM, 'x-kept: prefix', length(ONE), 'Content-Encoding: gzip'], ONE],
        [[FORM, 'x-kept: prefix', length(OTHER), 'Content-Encoding: gzip'], OTHER],
      );
    });
  } else {
    it('held: Content-Encoding: gzip on a plain form is refused by body-parser (400), nothing run', async () => {
      const before = count('keptrev');
      const r = await send(
        app,
        [key(), FORM, 'x-kept: prefix', length(ONE), 'Content-Encoding: gzip'],
        ONE,
      );
      expect(r.status).toBe(400);
      expect(count('keptrev')).toBe(before);
    });
  }

  it('held: a plain Uint8Array copy kept is the body: runs, 422s another', async () => {
    await expectTold(
      [[FORM, 'x-kept: uint8', length(ONE)], ONE],
      [[FORM, 'x-kept: uint8', length(OTHER)], OTHER],
    );
  });

  it('held: a Proxy of the kept Buffer: a 500 problem, nothing run, no crash', async () => {
    const before = count('keptrev');
    const r = await send(app, [key(), FORM, 'x-kept: proxy', length(ONE)], ONE);
    expect(r.status).toBe(500);
    expect(r.body.length).toBeLessThan(2000);
    expect(count('keptrev')).toBe(before);
  });

  it('held: a refused request keeps no key: the correct retry runs once, replays, 422s another', async () => {
    const before = count('keptrev');
    const k = key();
    for (let i = 0; i < 2; i++) {
      const refused = await send(app, [k, FORM, 'x-kept: prefix', length(ONE)], ONE);
      expect(refused.status).toBe(500);
    }
    expect(count('keptrev')).toBe(before);
    const retry = await send(app, [k, FORM, length(ONE)], ONE);
    expect([retry.status, retry.replayed]).toEqual([201, false]);
    const replay = await send(app, [k, FORM, length(ONE)], ONE);
    expect([replay.status, replay.replayed]).toEqual([201, true]);
    const other = await send(app, [k, FORM, length(OTHER)], OTHER);
    expect([other.status, other.replayed]).toEqual([422, false]);
    expect(count('keptrev')).toBe(before + 1);
  });

  it('held: Content-Length with Transfer-Encoding, and a bad Content-Length: refused, nothing run', async () => {
    const before = count('keptrev');
    for (const lines of [
      ['Content-Length: 8', 'Transfer-Encoding: chunked'],
      ['Content-Length: +17'],
      ['Content-Length: 17', 'Content-Length: 8'],
    ]) {
      const r = await send(app, [key(), FORM, 'x-kept: prefix', ...lines], ONE);
      expect(r.status).toBeGreaterThanOrEqual(400);
      expect(r.replayed).toBe(false);
    }
    expect(count('keptrev')).toBe(before);
  });
});
