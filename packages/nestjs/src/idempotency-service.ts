import { createIdempotencyHandler, type IdempotencyHandler } from '@idem/http';
import { Inject, Injectable, type OnApplicationShutdown } from '@nestjs/common';
import {
  IDEMPOTENCY_OPTIONS,
  type IdempotentOptions,
  type NestHttpRequest,
  type NestIdempotencyOptions,
} from './options.js';
import { userScope } from './principal.js';

/**
 * Holds the `@idem/http` handlers of the module: one for the module's options, and one for
 * each route whose `@Idempotent()` overrides them (the store stays the module's). Created
 * with the module, so bad module options fail at startup.
 */
@Injectable()
export class IdempotencyService implements OnApplicationShutdown {
  readonly #options: Omit<NestIdempotencyOptions, 'shutdownDrainMs'>;
  readonly #shutdownDrainMs: number | undefined;
  readonly #base: IdempotencyHandler<NestHttpRequest>;
  readonly #perRoute = new WeakMap<IdempotentOptions, IdempotencyHandler<NestHttpRequest>>();
  readonly #all = new Set<IdempotencyHandler<NestHttpRequest>>();

  constructor(@Inject(IDEMPOTENCY_OPTIONS) options: NestIdempotencyOptions) {
    const { shutdownDrainMs, ...rest } = options;
    this.#options = rest;
    this.#shutdownDrainMs = shutdownDrainMs;
    this.#base = this.#create({});
  }

  #create(route: Omit<IdempotentOptions, 'operation'>): IdempotencyHandler<NestHttpRequest> {
    const handler = createIdempotencyHandler<NestHttpRequest>({
      ...this.#options,
      ...route,
      store: this.#options.store,
      scope: route.scope ?? this.#options.scope ?? userScope,
    });
    this.#all.add(handler);
    return handler;
  }

  /** The handler for a route's `@Idempotent()` settings. */
  handlerFor(route: IdempotentOptions): IdempotencyHandler<NestHttpRequest> {
    const { operation: _operation, ...own } = route;
    if (Object.keys(own).length === 0) return this.#base;
    let handler = this.#perRoute.get(route);
    if (!handler) {
      handler = this.#create(own);
      this.#perRoute.set(route, handler);
    }
    return handler;
  }

  /**
   * Waits until no final write is being retried in the background, or `timeoutMs` passed;
   * resolves with how many are still pending. Called at shutdown (`app.close()`, or a signal
   * with `enableShutdownHooks()`), after the server stopped taking requests.
   * @param timeoutMs longest wait @default the lease
   */
  async drain(timeoutMs?: number): Promise<number> {
    const left = await Promise.all([...this.#all].map((handler) => handler.drain(timeoutMs)));
    return left.reduce((sum, n) => sum + n, 0);
  }

  /** @internal Nest's shutdown hook. */
  async onApplicationShutdown(): Promise<void> {
    if (this.#shutdownDrainMs !== 0) await this.drain(this.#shutdownDrainMs);
  }
}
