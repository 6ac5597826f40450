import 'reflect-metadata';
import { randomUUID } from 'node:crypto';
import type { IdempotencyContext } from '@idem/http';
import { json, send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import { Controller, Inject, Injectable, Module, Post } from '@nestjs/common';
import { afterEach, describe, expect, it } from 'vitest';
import {
  IdemContext,
  IdempotencyModule,
  IdempotencyService,
  Idempotent,
  type NestIdempotencyOptions,
} from '../src/index.js';
import { type Platform, startNest } from './scenario-app.js';

/** A configuration provider, as an app's config module would export it. */
@Injectable()
class IdemConfig {
  readonly store = createMemoryStore();
  readonly leaseMs = 5_000;
  factoryCalls = 0;
}

@Module({ providers: [IdemConfig], exports: [IdemConfig] })
class ConfigModule {}

let runs = 0;

@Controller('jobs')
@Idempotent()
class JobsController {
  @Post()
  create(@IdemContext() idem: IdempotencyContext | undefined) {
    runs += 1;
    return { run: runs, storageKey: idem?.storageKey };
  }
}

@Module({
  imports: [
    IdempotencyModule.forRootAsync({
      imports: [ConfigModule],
      inject: [IdemConfig],
      useFactory: async (config: IdemConfig): Promise<NestIdempotencyOptions> => {
        config.factoryCalls += 1;
        // A single-tenant service: every caller shares one key space, on purpose.
        return { store: config.store, leaseMs: config.leaseMs, scope: 'global' };
      },
    }),
  ],
  controllers: [JobsController],
})
class AsyncAppModule {}

/** A provider of the app that uses the service the module exports. */
@Injectable()
class ShutdownProbe {
  constructor(@Inject(IdempotencyService) readonly idempotency: IdempotencyService) {}
}

@Module({
  imports: [IdempotencyModule.forRoot({ store: createMemoryStore() })],
  providers: [ShutdownProbe],
})
class ServiceAppModule {}

describe.each<Platform>(['express', 'fastify'])('IdempotencyModule on platform-%s', (platform) => {
  let close = async () => {};
  afterEach(() => close());

  it('forRootAsync builds the options with the injected providers, once', async () => {
    const started = await startNest(platform, AsyncAppModule);
    close = started.close;
    const config = started.app.get(IdemConfig);
    expect(config.factoryCalls).toBe(1);
    const key = `key-${randomUUID()}`;
    // No guard and no user: the explicit 'global' scope of the factory's options applies.
    const first = await send(started.url, '/jobs', { key, body: { n: 1 }, tenant: null });
    const replay = await send(started.url, '/jobs', { key, body: { n: 1 }, tenant: null });
    expect(first.status).toBe(201);
    expect(replay.headers['idempotent-replayed']).toBe('true');
    expect(json(replay)).toEqual(json(first));
    // Recorded in the factory's store: read it there, not through the module.
    const { storageKey } = json(first) as { storageKey: string };
    expect((await config.store.get(storageKey))?.status).toBe('completed');
  });

  it('exports IdempotencyService, whose drain resolves at once when nothing is pending', async () => {
    const started = await startNest(platform, ServiceAppModule);
    close = started.close;
    const probe = started.app.get(ShutdownProbe);
    expect(await probe.idempotency.drain(1_000)).toBe(0);
  });
});

@Controller('bad')
class BadRouteController {
  @Post()
  @Idempotent({ leaseMs: -5 })
  create() {
    return {};
  }
}

@Module({
  imports: [IdempotencyModule.forRoot({ store: createMemoryStore() })],
  controllers: [BadRouteController],
})
class BadRouteModule {}

describe('route options are checked at startup', () => {
  it('fails NestFactory.create with InvalidInputError for a bad @Idempotent() option', async () => {
    await expect(startNest('express', BadRouteModule)).rejects.toMatchObject({
      code: 'INVALID_INPUT',
      message: expect.stringContaining('leaseMs'),
    });
  });
});
