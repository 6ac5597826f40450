import type { IncomingHttpHeaders, IncomingMessage } from 'node:http';
import type { HttpIdempotencyOptions, ScopeHook } from '@idem/http';

/**
 * What the hooks (`scope`, `fingerprint.extras`) receive: the request of the Nest platform in
 * use, an Express `Request` on `@nestjs/platform-express`, a `FastifyRequest` on
 * `@nestjs/platform-fastify` (cast it to yours). `user` is what an authentication guard set.
 */
export interface NestHttpRequest {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  /** The authenticated caller, when a guard (e.g. Passport's `AuthGuard`) set it. */
  user?: unknown;
  /** The parsed body, when the platform parsed it. */
  body?: unknown;
  /** The Node request (Fastify platform). */
  raw?: IncomingMessage;
}

/**
 * Options of {@link IdempotencyModule}: those of `@idem/http` (store, lease, retention,
 * methods, required key, fingerprint, outcome policy, limits, fail open, events), with hooks
 * that get the platform's request, and a `scope` that defaults to the guard-set
 * `request.user` (see {@link principalFromUser}).
 */
export interface NestIdempotencyOptions
  extends Omit<HttpIdempotencyOptions<NestHttpRequest>, 'scope'> {
  /**
   * Whose key space a request's key belongs to: a hook that returns the request's principal,
   * or `'global'` for a single-tenant server where every caller shares one key space on
   * purpose. @default the principal of `request.user` ({@link principalFromUser}): a request
   * that no guard authenticated gets a 500 `no-principal` problem and runs nothing, never a
   * shared key space
   */
  scope?: ScopeHook<NestHttpRequest> | 'global';
  /**
   * Longest wait at shutdown (`app.close()`, or a signal with `enableShutdownHooks()`) for
   * final writes still retried in the background after the store failed, so that they land
   * rather than leave their keys to a second run; 0 does not wait. @default the lease
   */
  shutdownDrainMs?: number;
  /**
   * Follow an Observable a route handler returns (or an `async` method resolves to): when an
   * interceptor answers first (a timeout), the key stays held until its work ended, watched
   * with V8's promise hooks, which are process-wide: while one request's work is watched,
   * every promise of the process costs more. `false` never enables them: the key of such a
   * request is then released (or the answer recorded) once the answer went out, while the
   * Observable's work may still run, so a retry can run the handler beside it. A returned
   * promise is followed either way. @default true
   */
  followObservables?: boolean;
}

/**
 * Per-route (or per-controller) settings of {@link Idempotent}: any option of the module but
 * the store, `shutdownDrainMs` and `followObservables`, plus `operation`. A method's settings replace its controller's whole.
 */
export interface IdempotentOptions
  extends Partial<Omit<NestIdempotencyOptions, 'store' | 'shutdownDrainMs' | 'followObservables'>> {
  /**
   * Name the key space is unique within, in place of the route pattern Nest matched (the
   * method stays part of it: `${METHOD} ${operation}`). Give two routes the same one to make
   * a key taken on one replay on the other. @default the matched route pattern
   */
  operation?: string;
}

/** Options of {@link IdempotencyModule.forRootAsync}. */
export interface IdempotencyModuleAsyncOptions {
  /** Modules whose providers `useFactory` injects. */
  imports?: unknown[];
  /** Makes the options, from the providers named in `inject`. */
  useFactory: (...args: never[]) => NestIdempotencyOptions | Promise<NestIdempotencyOptions>;
  /** Providers handed to `useFactory`, in order. */
  inject?: unknown[];
}

/** Injection token of the module's options. */
export const IDEMPOTENCY_OPTIONS = Symbol.for('@idem/nestjs:options');
/** Metadata key under which {@link Idempotent} stores a route's settings. */
export const IDEMPOTENT_METADATA = '@idem/nestjs:idempotent';
