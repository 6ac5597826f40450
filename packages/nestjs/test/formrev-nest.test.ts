import 'reflect-metadata';
import { randomUUID } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { type Exchange, send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import { Body, Controller, type INestApplication, Module, Post, UseGuards } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { ExpressAdapter } from '@nestjs/platform-express';
import { FastifyAdapter } from '@nestjs/platform-fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IdempotencyModule, Idempotent } from '../src/index.js';
import { count, ran } from './review-kit.js';
import { type Platform, TenantGuard } from './scenario-app.js';

// formrev: attacks on cc288e5 on NestJS, where the interceptor always runs after Nest's
// parsers (qs extended on Express, fast-querystring on Fastify). qs drops text with no '%'
// involved (an empty name, the text after a closing bracket), so two different forms parse
// alike; and with `rawBody: true` (the way out the README and the error message name) the
// kept bytes are looked at only when the parsed body is refused, so they do not help. Real
// Nest on loopback, both platforms.

const FORM = 'application/x-www-form-urlencoded';

@Controller()
@UseGuards(TenantGuard)
class FormrevController {
  @Post('formrev')
  @Idempotent()
  pay(@Body() body: unknown) {
    return { n: ran('formrev'), body };
  }
}

@Module({
  imports: [IdempotencyModule.forRoot({ store: createMemoryStore(), onWarning: () => {} })],
  controllers: [FormrevController],
})
class FormrevModule {}

async function start(platform: Platform, rawBody: boolean): Promise<INestApplication> {
  const options = { logger: false as const, abortOnError: false, rawBody };
  const app =
    platform === 'express'
      ? await NestFactory.create(FormrevModule, new ExpressAdapter(), options)
      : await NestFactory.create(FormrevModule, new FastifyAdapter(), options);
  await app.listen(0, '127.0.0.1');
  return app;
}

describe.each<Platform>(['express', 'fastify'])('formrev nest: parsed forms, on %s', (platform) => {
  let plain: INestApplication;
  let kept: INestApplication;
  beforeAll(async () => {
    plain = await start(platform, false);
    kept = await start(platform, true);
  });
  afterAll(async () => {
    await plain.close();
    await kept.close();
  });

  const post = (
    app: INestApplication,
    key: string,
    body: string,
    type = FORM,
  ): Promise<Exchange> => {
    const { port } = app.getHttpServer().address() as AddressInfo;
    return send(`http://127.0.0.1:${port}`, '/formrev', {
      key,
      body: Buffer.from(body),
      headers: { 'content-type': type },
    });
  };

  /** The first body runs (201); the other under the same key must be 422, never a replay. */
  async function expectTold(app: INestApplication, one: string, two: string, type = FORM) {
    const key = randomUUID();
    const before = count('formrev');
    expect((await post(app, key, one, type)).status).toBe(201);
    const other = await post(app, key, two, type);
    expect(other.headers['idempotent-replayed']).toBeUndefined();
    expect(other.status).toBe(422);
    expect(count('formrev')).toBe(before + 1);
  }

  // On Express (qs): FINDING (MEDIUM, isolation): `amount=10&=1` and `amount=10&=9999` both
  // parse to { amount: '10' } (qs drops a pair with an empty name): replayed instead of 422.
  // On Fastify (fast-querystring keeps the name ''): held.
  // Fix: see @idem/express's formrev-qs.test.ts (refuse a parsed form without kept bytes).
  (platform === 'express' ? it.fails : it)(
    'an empty name with another value: told apart (422)',
    async () => {
      await expectTold(plain, 'amount=10&=1', 'amount=10&=9999');
    },
  );

  // On Express: FINDING (MEDIUM, isolation): qs drops the text after a closing bracket:
  // `refund[amount]x=10` and `refund[amount]y=10` parse alike: replayed. Fastify: held (no
  // brackets parsed, the names differ).
  (platform === 'express' ? it.fails : it)(
    'text after a closing bracket: told apart (422)',
    async () => {
      await expectTold(plain, 'refund[amount]x=10', 'refund[amount]y=10');
    },
  );

  // On Express: FINDING (MEDIUM, isolation; the remedy does not remedy): with `rawBody: true`
  // the bytes are on the request, but nodeRequestBody (and the Fastify fallback) fingerprint
  // the parsed form whenever it is not refused, so the pair above still collides.
  // Fix: in nodeRequestBody (and bodyOf on Nest/Koa), when a Buffer rawBody is kept, fingerprint
  // it (bodyFromBytes: JSON still canonical) before or instead of the parsed body, at least
  // for non-JSON types. Fastify: held (the parsed form tells them apart).
  (platform === 'express' ? it.fails : it)(
    'rawBody: true, an empty name with another value: told apart (422)',
    async () => {
      await expectTold(kept, 'amount=10&=1', 'amount=10&=9999');
    },
  );

  // FINDING (LOW, documented gap, but with a cheap fix once rawBody is kept): JSON with a
  // repeated member name. The README calls it a known gap of parsing before the interceptor;
  // with `rawBody: true` the bytes that tell them apart are kept and ignored (bodyFromBytes
  // would fingerprint such a body by its bytes): `{"amount":1,"amount":2}` and
  // `{"amount":2}` are replayed one for the other. Fix as above.
  it.fails('rawBody: true, JSON with a repeated member name: told apart (422)', async () => {
    await expectTold(kept, '{"amount":1,"amount":2}', '{"amount":2}', 'application/json');
  });

  it('held: duplicates keep their order (422)', async () => {
    await expectTold(plain, 'a=1&a=2', 'a=2&a=1');
  });

  it('held: an ordinary form runs and replays; a % in it is refused, or told apart with rawBody', async () => {
    const key = randomUUID();
    const body = 'to=J%C3%A9r%C3%B4me+D&amount=10&note=';
    expect((await post(plain, key, body)).status).toBe(201);
    expect((await post(plain, key, body)).headers['idempotent-replayed']).toBe('true');
    expect((await post(plain, randomUUID(), 'a=50%25')).status).toBe(500);
    await expectTold(kept, 'a=%FF+', 'a=%25FF%20');
  });
});
