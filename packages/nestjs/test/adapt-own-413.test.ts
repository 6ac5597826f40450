// @idem/nestjs: which 413 is the platform body parser's limit (adapt-left N38). Only the
// parser's own refusal (body-parser's `entity.too.large`, Fastify's
// `FST_ERR_CTP_BODY_TOO_LARGE`) is answered with idem's body-too-large problem, and it runs
// nothing and takes no key (a retry with a smaller body runs). Any other 413 is the app's:
// a handler's own 413 is an outcome like any other 4xx (recorded under a policy that keeps
// 4xx, released under the default), and a 413 that app middleware or a hook gives before the
// route keeps the app's own answer, never replaced by idem's problem.
import 'reflect-metadata';
import { randomUUID } from 'node:crypto';
import { finalOnceStarted, PROBLEM_TYPES } from '@idem/http';
import { json, send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import { Controller, Module, PayloadTooLargeException, Post } from '@nestjs/common';
import type { NestExpressApplication } from '@nestjs/platform-express';
import type { NestFastifyApplication } from '@nestjs/platform-fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IdempotencyModule, Idempotent } from '../src/index.js';
import { type Platform, startNest } from './scenario-app.js';

const runs = new Map<string, number>();
const ran = (name: string) => {
  const n = (runs.get(name) ?? 0) + 1;
  runs.set(name, n);
  return n;
};

@Controller('quota')
class QuotaController {
  /** The handler's own 413, under a policy that records every answer once started. */
  @Post('kept')
  @Idempotent({ scope: 'global', isFinal: finalOnceStarted })
  kept() {
    ran('kept');
    throw new PayloadTooLargeException('quota exceeded');
  }

  /** The handler's own 413 under the default policy (2xx only). */
  @Post('default')
  @Idempotent({ scope: 'global' })
  byDefault() {
    ran('default');
    throw new PayloadTooLargeException('quota exceeded');
  }

  @Post('ok')
  @Idempotent({ scope: 'global' })
  ok() {
    return { n: ran('ok') };
  }
}

@Module({
  imports: [IdempotencyModule.forRoot({ store: createMemoryStore(), onWarning: () => {} })],
  controllers: [QuotaController],
})
class QuotaModule {}

/** A 413 that app code gives before the route (a quota check), for `X-Quota: over`. */
function quotaError(): Error {
  return Object.assign(new Error('quota exceeded before the route'), {
    status: 413,
    statusCode: 413,
    expose: true,
  });
}

const configure: Record<Platform, (app: unknown) => void> = {
  express: (app) =>
    (app as NestExpressApplication).use(
      (
        request: { headers: Record<string, unknown> },
        _response: unknown,
        next: (error?: unknown) => void,
      ) => next(request.headers['x-quota'] === 'over' ? quotaError() : undefined),
    ),
  fastify: (app) =>
    (app as NestFastifyApplication)
      .getHttpAdapter()
      .getInstance()
      .addHook('preHandler', async (request) => {
        if (request.headers['x-quota'] === 'over') throw quotaError();
      }),
};

/** A JSON body past the platform's own parser limit (100 KB on Express, 1 MiB on Fastify). */
const OVERSIZE = { pad: 'p'.repeat(1.5 * 1024 * 1024) };

for (const platform of ['express', 'fastify'] as Platform[]) {
  describe(`@idem/nestjs on ${platform}: a 413 that is not the body parser's`, () => {
    let url = '';
    let close = async () => {};
    beforeAll(async () => {
      ({ url, close } = await startNest(platform, QuotaModule, configure[platform]));
    });
    afterAll(() => close());

    it("a handler's own 413 under finalOnceStarted: recorded, replayed, run once", async () => {
      const key = `n38-kept-${randomUUID()}`;
      const before = runs.get('kept') ?? 0;
      const first = await send(url, '/quota/kept', { key, body: { a: 1 } });
      expect(first.status).toBe(413);
      expect(json(first)).toMatchObject({ message: 'quota exceeded' });
      const again = await send(url, '/quota/kept', { key, body: { a: 1 } });
      expect(again.status).toBe(413);
      expect(again.headers['idempotent-replayed']).toBe('true');
      expect(again.body.equals(first.body)).toBe(true);
      expect(runs.get('kept')).toBe(before + 1);
    });

    it("a handler's own 413 under the default policy: released, the retry runs again", async () => {
      const key = `n38-default-${randomUUID()}`;
      const before = runs.get('default') ?? 0;
      const first = await send(url, '/quota/default', { key, body: { a: 1 } });
      expect(first.status).toBe(413);
      expect(json(first)).toMatchObject({ message: 'quota exceeded' });
      const again = await send(url, '/quota/default', { key, body: { a: 1 } });
      expect(again.status).toBe(413);
      expect(again.headers['idempotent-replayed']).toBeUndefined();
      expect(runs.get('default')).toBe(before + 2);
    });

    it("a 413 app code gives before the route keeps the app's answer (not idem's problem), takes no key", async () => {
      const key = `n38-before-${randomUUID()}`;
      const refused = await send(url, '/quota/ok', {
        key,
        body: { a: 1 },
        headers: { 'x-quota': 'over' },
      });
      expect(refused.status).toBe(413);
      expect(refused.body.toString()).not.toContain(PROBLEM_TYPES.bodyTooLarge);
      expect(refused.headers['content-type'] ?? '').not.toContain('application/problem+json');
      const before = runs.get('ok') ?? 0;
      const next = await send(url, '/quota/ok', { key, body: { a: 1 } });
      expect(next.status).toBe(201);
      expect(runs.get('ok')).toBe(before + 1);
    });

    it("the body parser's own refusal: idem's problem, nothing run, the key free for a smaller body", async () => {
      const key = `n38-parser-${randomUUID()}`;
      const before = runs.get('ok') ?? 0;
      const refused = await send(url, '/quota/ok', { key, body: OVERSIZE });
      expect(refused.status).toBe(413);
      expect(refused.headers['content-type']).toContain('application/problem+json');
      expect(json(refused)).toMatchObject({ type: PROBLEM_TYPES.bodyTooLarge, status: 413 });
      expect(runs.get('ok') ?? 0).toBe(before);
      const next = await send(url, '/quota/ok', { key, body: { a: 1 } });
      expect(next.status).toBe(201);
      expect(next.headers['idempotent-replayed']).toBeUndefined();
      const again = await send(url, '/quota/ok', { key, body: { a: 1 } });
      expect(again.headers['idempotent-replayed']).toBe('true');
      expect(runs.get('ok')).toBe(before + 1);
    });
  });
}
