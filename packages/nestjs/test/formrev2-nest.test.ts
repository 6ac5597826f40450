import 'reflect-metadata';
import { randomUUID } from 'node:crypto';
import { request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createMemoryStore } from '@idem/store-memory';
import {
  type ArgumentsHost,
  Body,
  type CanActivate,
  Catch,
  Controller,
  Delete,
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

// formrev2: attacks on cf3d9b3/dd8c060 on NestJS (kept bytes first on both platforms; a
// parsed form without them refused; a parser's {} for a request declaring no body taken).
// Real Nest on loopback, Express and Fastify, with and without rawBody: true.

const FORM = 'application/x-www-form-urlencoded';
const BOM = Buffer.from([0xef, 0xbb, 0xbf]);

/**
 * Stands for a raw-body keeper that keeps the wrong bytes: the `x-kept` header cuts the bytes
 * Nest kept (`rawBody: true`) to their first 8 (`prefix`) or adds one (`longer`).
 */
class KeptGuard implements CanActivate {
  canActivate(context: ExecutionContext): boolean {
    const request = context
      .switchToHttp()
      .getRequest<{ headers: Record<string, unknown>; rawBody?: Buffer }>();
    const { rawBody: kept, headers } = request;
    if (kept !== undefined && headers['x-kept'] === 'prefix') request.rawBody = kept.subarray(0, 8);
    if (kept !== undefined && headers['x-kept'] === 'longer')
      request.rawBody = Buffer.concat([kept, Buffer.from('&')]);
    return true;
  }
}

/** Answers an error that is not an HttpException with its name and message (500). */
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
class Formrev2Controller {
  @Post('formrev2')
  @Idempotent()
  pay(@Body() body: unknown) {
    return { n: ran('formrev2'), body: body ?? null };
  }
  @Delete('formrev2')
  @Idempotent()
  remove() {
    return { n: ran('formrev2') };
  }
}

@Module({
  imports: [IdempotencyModule.forRoot({ store: createMemoryStore(), onWarning: () => {} })],
  controllers: [Formrev2Controller],
})
class Formrev2Module {}

async function start(platform: Platform, rawBody: boolean): Promise<INestApplication> {
  const options = { logger: false as const, abortOnError: false, rawBody };
  const app =
    platform === 'express'
      ? await NestFactory.create(Formrev2Module, new ExpressAdapter(), options)
      : await NestFactory.create(Formrev2Module, new FastifyAdapter(), options);
  app.useGlobalFilters(new NameFilter(app.getHttpAdapter()));
  await app.listen(0, '127.0.0.1');
  return app;
}

interface Reply {
  status: number;
  replayed: boolean;
  body: string;
}

function raw(
  app: INestApplication,
  key: string,
  body: Buffer | undefined,
  type: string | undefined,
  opts: { chunked?: boolean; method?: string; headers?: Record<string, string> } = {},
): Promise<Reply> {
  const { port } = app.getHttpServer().address() as AddressInfo;
  const headers: Record<string, string> = {
    'idempotency-key': key,
    'x-tenant': 'tenant-a',
    ...opts.headers,
  };
  if (type) headers['content-type'] = type;
  if (body !== undefined) {
    if (opts.chunked) headers['transfer-encoding'] = 'chunked';
    else headers['content-length'] = String(body.length);
  }
  return new Promise((resolve, reject) => {
    const req = request(
      `http://127.0.0.1:${port}/formrev2`,
      { method: opts.method ?? 'POST', headers, agent: false },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            replayed: res.headers['idempotent-replayed'] !== undefined,
            body: Buffer.concat(chunks).toString(),
          }),
        );
      },
    );
    req.setTimeout(5000, () => req.destroy(new Error('timed out')));
    req.on('error', reject);
    if (body !== undefined && body.length > 0) req.write(body);
    req.end();
  });
}

describe.each<Platform>(['express', 'fastify'])('formrev2 nest on %s', (platform) => {
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

  async function expectTold(
    app: INestApplication,
    one: Buffer,
    two: Buffer,
    type = FORM,
    opts: { chunked?: boolean } = {},
  ) {
    const key = randomUUID();
    const before = count('formrev2');
    expect((await raw(app, key, one, type, opts)).status).toBe(201);
    const other = await raw(app, key, two, type, opts);
    expect(other.replayed).toBe(false);
    expect(other.status).toBe(422);
    expect(count('formrev2')).toBe(before + 1);
  }

  it('held: rawBody: true, chunked forms that differ are told apart (422)', async () => {
    await expectTold(kept, Buffer.from('amount=10&=1'), Buffer.from('amount=10&=9'), FORM, {
      chunked: true,
    });
  });

  it('held: rawBody: true, chunked JSON with a repeated name is told apart (422)', async () => {
    await expectTold(
      kept,
      Buffer.from('{"to":"a","to":"b"}'),
      Buffer.from('{"to":"b"}'),
      'application/json',
      { chunked: true },
    );
  });

  it('held: JSON with a charset, no rawBody: runs, replays, 422s another', async () => {
    const type = 'application/json; charset=utf-8';
    const key = randomUUID();
    expect((await raw(plain, key, Buffer.from('{"a":1}'), type)).status).toBe(201);
    const same = await raw(plain, key, Buffer.from('{ "a" : 1 }'), type);
    expect([same.status, same.replayed]).toEqual([201, true]);
    expect((await raw(plain, key, Buffer.from('{"a":2}'), type)).status).toBe(422);
  });

  it('held: DELETE without a body runs (no false refusal)', async () => {
    for (const app of [plain, kept]) {
      const first = await raw(app, randomUUID(), undefined, undefined, { method: 'DELETE' });
      expect(first.status).toBe(200);
    }
  });

  it('held: a Content-Length: 0 form runs (no rawBody and rawBody: true)', async () => {
    for (const app of [plain, kept]) {
      const r = await raw(app, randomUUID(), Buffer.alloc(0), FORM);
      expect(r.status).toBe(201);
    }
  });

  // Was FINDING (LOW), fixed (a body that ended without a byte is none): a chunked request with no body bytes declares a body (Transfer-Encoding),
  // so the parser's {} (qs on Express, @fastify/formbody on Fastify) is refused as a lossy
  // parsed form: 500, while the same empty form with Content-Length: 0 runs (and with
  // rawBody: true it runs too). Fix: no safe rule on the value alone (qs gives {} for "=1"
  // too); document that empty chunked forms need rawBody: true, and name it in the 500.
  it('chunked empty form without rawBody runs (as Content-Length: 0 does)', async () => {
    const r = await raw(plain, randomUUID(), Buffer.alloc(0), FORM, { chunked: true });
    expect(r.status).toBe(201);
  });

  it('held: chunked empty form with rawBody: true runs', async () => {
    const r = await raw(kept, randomUUID(), Buffer.alloc(0), FORM, { chunked: true });
    expect(r.status).toBe(201);
  });

  it('held: chunked text with and without a BOM, no rawBody: 422 (not parsed on Express; kept as sent on Fastify)', async () => {
    const key = randomUUID();
    const a = await raw(plain, key, Buffer.concat([BOM, Buffer.from('pay')]), 'text/plain', {
      chunked: true,
    });
    expect(a.status).toBe(201);
    const b = await raw(plain, key, Buffer.from('pay'), 'text/plain', { chunked: true });
    expect([b.status, b.replayed]).toEqual([422, false]);
  });

  it('held: merge-patch+json, no rawBody: 422 for another body (Express), 415 from Fastify', async () => {
    const key = randomUUID();
    const type = 'application/merge-patch+json';
    const a = await raw(plain, key, Buffer.from('{"a":1}'), type);
    const b = await raw(plain, key, Buffer.from('{"a":2}'), type);
    expect(b.replayed).toBe(false);
    if (platform === 'express') expect([a.status, b.status]).toEqual([201, 422]);
    else expect([a.status, b.status]).toEqual([415, 415]);
  });

  // Was FINDING (LOW) on Fastify, fixed: Nest's kept bytes (on the Fastify request) were
  // fingerprinted without the Content-Length check the Node request's req.rawBody has, so a
  // kept copy cut short made two bodies one request (the second replayed the first's
  // outcome). Now refused as on Express (BodyAlreadyReadError, 500, nothing run). On the
  // Express platform the bytes are req.rawBody, checked already: held there.
  const held = platform === 'express' ? 'held: ' : '';
  const ONE = Buffer.from('to=alice&amount=1');
  const OTHER = Buffer.from('to=alice&amount=9999');

  it(`${held}rawBody: true, kept bytes shorter than the Content-Length: refused (500, nothing run)`, async () => {
    const before = count('formrev2');
    const key = randomUUID();
    for (const body of [ONE, OTHER]) {
      const r = await raw(kept, key, body, FORM, { headers: { 'x-kept': 'prefix' } });
      expect([r.status, r.replayed]).toEqual([500, false]);
      const error = JSON.parse(r.body);
      expect(error.name).toBe('BodyAlreadyReadError');
      expect(error.message).toMatch(/rawBody are 8 where \d+ were sent/);
    }
    expect(count('formrev2')).toBe(before);
  });

  it(`${held}rawBody: true, kept bytes longer than the Content-Length: refused (500, nothing run)`, async () => {
    const before = count('formrev2');
    const r = await raw(kept, randomUUID(), ONE, FORM, { headers: { 'x-kept': 'longer' } });
    expect(r.status).toBe(500);
    expect(JSON.parse(r.body)).toMatchObject({ name: 'BodyAlreadyReadError' });
    expect(JSON.parse(r.body).message).toMatch(/rawBody are 18 where 17 were sent/);
    expect(count('formrev2')).toBe(before);
  });

  it('held: rawBody: true, the whole body kept: runs, replays itself, 422s another', async () => {
    const before = count('formrev2');
    const key = randomUUID();
    const first = await raw(kept, key, ONE, FORM);
    expect(first.status).toBe(201);
    expect(JSON.parse(first.body).body).toEqual({ to: 'alice', amount: '1' });
    const again = await raw(kept, key, ONE, FORM);
    expect([again.status, again.replayed]).toEqual([201, true]);
    const other = await raw(kept, key, OTHER, FORM);
    expect([other.status, other.replayed]).toEqual([422, false]);
    expect(count('formrev2')).toBe(before + 1);
  });
});
