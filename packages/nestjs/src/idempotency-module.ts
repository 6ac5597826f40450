import { type DynamicModule, Module, type Provider } from '@nestjs/common';
import { APP_INTERCEPTOR, DiscoveryModule } from '@nestjs/core';
import { IdempotencyInterceptor } from './idempotency-interceptor.js';
import { IdempotencyService } from './idempotency-service.js';
import {
  IDEMPOTENCY_OPTIONS,
  type IdempotencyModuleAsyncOptions,
  type NestIdempotencyOptions,
} from './options.js';

function dynamicModule(options: Provider, imports: DynamicModule['imports'] = []): DynamicModule {
  return {
    module: IdempotencyModule,
    global: true,
    imports: [DiscoveryModule, ...imports],
    providers: [
      options,
      IdempotencyService,
      { provide: APP_INTERCEPTOR, useClass: IdempotencyInterceptor },
    ],
    exports: [IdempotencyService],
  };
}

/**
 * Idempotency-Key for the routes marked with `@Idempotent()`, app-wide (a global module that
 * registers its interceptor with `APP_INTERCEPTOR`). Import it once, in the root module.
 */
@Module({})
// biome-ignore lint/complexity/noStaticOnlyClass: a Nest dynamic module is a class with static factories.
export class IdempotencyModule {
  /** With options known up front. */
  static forRoot(options: NestIdempotencyOptions): DynamicModule {
    return dynamicModule({ provide: IDEMPOTENCY_OPTIONS, useValue: options });
  }

  /** With options made by a factory from other providers (a config service, a Redis client). */
  static forRootAsync(options: IdempotencyModuleAsyncOptions): DynamicModule {
    return dynamicModule(
      {
        provide: IDEMPOTENCY_OPTIONS,
        useFactory: options.useFactory,
        inject: (options.inject ?? []) as never[],
      },
      options.imports as DynamicModule['imports'],
    );
  }
}
