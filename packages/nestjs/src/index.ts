// What handlers and options use, so that an app needs no import of @idem/http.
export type { IdempotencyContext } from '@idem/http';
export { finalOn2xx, finalOnceStarted, PROBLEM_TYPES } from '@idem/http';
export { IdempotencyInterceptor } from './idempotency-interceptor.js';
export { IdempotencyModule } from './idempotency-module.js';
export { IdempotencyService } from './idempotency-service.js';
export { IdemContext, Idempotent } from './idempotent.js';
export type {
  IdempotencyModuleAsyncOptions,
  IdempotentOptions,
  NestHttpRequest,
  NestIdempotencyOptions,
} from './options.js';
export { IDEMPOTENCY_OPTIONS, IDEMPOTENT_METADATA } from './options.js';
export type { UserPrincipal } from './principal.js';
export { principalFromUser, userScope } from './principal.js';
