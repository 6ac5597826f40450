import 'reflect-metadata';
import type { AddressInfo } from 'node:net';
import { createMemoryStore } from '@idem/store-memory';
import { Body, Controller, type INestApplication, Module, Post } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { ExpressAdapter } from '@nestjs/platform-express';
import { FastifyAdapter } from '@nestjs/platform-fastify';
import { afterAll, describe, expect, it } from 'vitest';
import { IdempotencyModule, Idempotent } from '../src/index.js';

// Nest parses JSON before any interceptor runs. With `rawBody: true` it keeps the bytes, and
// the interceptor fingerprints a JSON text that JSON.parse cannot hold exactly by them.

let runs = 0;

@Controller()
class TransfersController {
  @Post('transfers')
  @Idempotent()
  transfer(@Body() body: unknown) {
    return { runs: ++runs, body };
  }
}

@Module({
  imports: [
    IdempotencyModule.forRoot({
      store: createMemoryStore(),
      scope: () => ({ principal: 'tenant-a' }),
      onWarning: () => {},
    }),
  ],
  controllers: [TransfersController],
})
class TransfersModule {}

const apps: INestApplication[] = [];
afterAll(() => Promise.all(apps.map((app) => app.close())));

async function start(platform: 'express' | 'fastify', rawBody: boolean) {
  const options = { logger: false as const, abortOnError: false, rawBody };
  const app =
    platform === 'express'
      ? await NestFactory.create(TransfersModule, new ExpressAdapter(), options)
      : await NestFactory.create(TransfersModule, new FastifyAdapter(), options);
  apps.push(app);
  await app.listen(0, '127.0.0.1');
  const { port } = app.getHttpServer().address() as AddressInfo;
  return (body: string, key: string) =>
    fetch(`http://127.0.0.1:${port}/transfers`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'idempotency-key': key },
      body,
    });
}

const PAIRS = [
  ['integers past 2^53', '{"amount":9007199254740993}', '{"amount":9007199254740992}'],
  ['repeated member names', '{"to":"alice","to":"mallory"}', '{"to":"mallory"}'],
] as const;

describe.each(['express', 'fastify'] as const)('@idem/nestjs on platform-%s', (platform) => {
  it('rawBody: true: bodies JSON.parse cannot tell apart are two requests (422)', async () => {
    const send = await start(platform, true);
    for (const [name, first, second] of PAIRS) {
      const key = `${platform}-raw-${name}`;
      const before = runs;
      expect((await send(first, key)).status).toBe(201);
      expect((await send(second, key)).status).toBe(422);
      const again = await send(first, key);
      expect(again.status).toBe(201);
      expect(again.headers.get('idempotent-replayed')).toBe('true');
      expect(runs - before).toBe(1);
    }
  });

  it('without rawBody: the parsed value alone, in which they are one request (documented)', async () => {
    const send = await start(platform, false);
    const [, first, second] = PAIRS[1];
    const key = `${platform}-parsed`;
    expect((await send(first, key)).status).toBe(201);
    const other = await send(second, key);
    expect(other.status).toBe(201);
    expect(other.headers.get('idempotent-replayed')).toBe('true');
  });
});
