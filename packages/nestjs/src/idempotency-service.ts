import { type DrainOptions, InvalidInputError } from '@idem/core';
import { createIdempotencyHandler, type IdempotencyHandler } from '@idem/http';
import { tapRequestBodies } from '@idem/http/node';
import {
  Inject,
  Injectable,
  type OnApplicationShutdown,
  type OnModuleInit,
  Optional,
} from '@nestjs/common';
import { DiscoveryService, HttpAdapterHost, MetadataScanner, Reflector } from '@nestjs/core';
import {
  IDEMPOTENCY_OPTIONS,
  IDEMPOTENT_METADATA,
  type IdempotentOptions,
  type NestHttpRequest,
  type NestIdempotencyOptions,
} from './options.js';
import {
  answerExpressBodyLimit,
  answerFastifyBodyLimit,
  keepFastifyMarks,
  markRoutes,
  refusalJudge,
  watchExpressVersionFilters,
} from './platform-body-limit.js';
import { userScope } from './principal.js';

/**
 * Holds the `@idem/http` handlers of the module: one for the module's options, and one for
 * each route whose `@Idempotent()` overrides them (the store stays the module's). All are
 * made at startup, so bad options (the module's or a route's) fail `NestFactory.create`
 * (`InvalidInputError`) rather than a request.
 */
@Injectable()
export class IdempotencyService implements OnModuleInit, OnApplicationShutdown {
  @Inject(MetadataScanner) private readonly scanner!: MetadataScanner;
  readonly #options: Omit<NestIdempotencyOptions, 'shutdownDrainMs' | 'followObservables'>;
  /** Whether an Observable a handler returns is followed (see `followObservables`). */
  readonly followObservables: boolean;
  readonly #shutdownDrainMs: number | undefined;
  readonly #base: IdempotencyHandler<NestHttpRequest>;
  readonly #perRoute = new WeakMap<IdempotentOptions, IdempotencyHandler<NestHttpRequest>>();
  readonly #all = new Set<IdempotencyHandler<NestHttpRequest>>();

  constructor(
    @Inject(IDEMPOTENCY_OPTIONS) options: NestIdempotencyOptions,
    @Inject(DiscoveryService) private readonly discovery: DiscoveryService,
    @Inject(Reflector) private readonly reflector: Reflector,
    @Optional() @Inject(HttpAdapterHost) private readonly adapterHost?: HttpAdapterHost,
  ) {
    if (typeof options !== 'object' || options === null) {
      throw new InvalidInputError('IdempotencyModule needs an options object with a store');
    }
    const { shutdownDrainMs, followObservables, ...rest } = options;
    // Checked now: at shutdown, a bad value would make app.close() fail and drain nothing.
    if (
      shutdownDrainMs !== undefined &&
      !(
        typeof shutdownDrainMs === 'number' &&
        Number.isFinite(shutdownDrainMs) &&
        shutdownDrainMs >= 0
      )
    ) {
      throw new InvalidInputError('shutdownDrainMs must be a finite, non-negative number of ms');
    }
    if (followObservables !== undefined && typeof followObservables !== 'boolean') {
      throw new InvalidInputError('followObservables must be a boolean');
    }
    this.followObservables = followObservables ?? true;
    this.#options = rest;
    this.#shutdownDrainMs = shutdownDrainMs;
    this.#base = this.#create({});
    this.#answerPlatformBodyLimit();
  }

  /** The `@Idempotent()` settings of a route, as the interceptor reads them (method, then class). */
  #settingsOf(method: object, controller: object): IdempotentOptions | false | undefined {
    return this.reflector.getAllAndOverride<IdempotentOptions | false | undefined>(
      IDEMPOTENT_METADATA,
      [method as () => unknown, controller as () => unknown],
    );
  }

  /**
   * The platform's own body limit refusing a keyed request to an `@Idempotent()` route gets
   * the `body-too-large` problem (see `platform-body-limit.ts`). Made here, before Nest
   * registers the routes (`app.init()`): the route methods are marked now, so that the handlers
   * Nest registers for them carry it, and Fastify's `onRoute` hook sees every route. Express's
   * error middleware waits for `onModuleInit` (after the routes, before Nest's exception layer).
   */
  #answerPlatformBodyLimit(): void {
    const adapter = this.adapterHost?.httpAdapter as
      | { getType?(): unknown; getInstance?(): unknown }
      | undefined;
    const type = typeof adapter?.getType === 'function' ? adapter.getType() : undefined;
    if (type !== 'express' && type !== 'fastify') return;
    const byName = markRoutes(
      this.discovery.getControllers(),
      (method, controller) => this.#settingsOf(method, controller),
      this,
    );
    const judge = refusalJudge(
      (settings) => this.handlerFor(settings),
      (request) =>
        (
          adapter as { getRequestHostname?(request: unknown): unknown } | undefined
        )?.getRequestHostname?.(request),
    );
    const instance = adapter?.getInstance?.() as never;
    if (type === 'fastify') {
      keepFastifyMarks(adapter as never);
      answerFastifyBodyLimit(instance, this, byName, judge);
    } else {
      watchExpressVersionFilters(adapter as never);
      this.#expressBodyLimit = () => answerExpressBodyLimit(instance, this, byName, judge);
    }
  }

  /** Adds the Express error middleware (see {@link #answerPlatformBodyLimit}), once. */
  #expressBodyLimit: (() => void) | undefined;

  #create(route: Omit<IdempotentOptions, 'operation'>): IdempotencyHandler<NestHttpRequest> {
    const options = {
      ...this.#options,
      ...route,
      store: this.#options.store,
      // Only a scope left out takes the default (the user): `null` is a bad value, refused by
      // the HTTP handler at creation as on every other adapter, not read as "left out".
      scope:
        route.scope !== undefined
          ? route.scope
          : this.#options.scope !== undefined
            ? this.#options.scope
            : userScope,
    };
    const handler = createIdempotencyHandler<NestHttpRequest>(options);
    // The platform's parser reads the body before the interceptor: the bytes as sent are kept
    // for it as they come in (see `tapRequestBodies`).
    tapRequestBodies(options);
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
  async drain(timeoutMs?: number, options?: DrainOptions): Promise<number> {
    const left = await Promise.all(
      [...this.#all].map((handler) => handler.drain(timeoutMs, options)),
    );
    return left.reduce((sum, n) => sum + n, 0);
  }

  /** @internal Makes the handlers of every `@Idempotent()` controller and route now. */
  onModuleInit(): void {
    const expressBodyLimit = this.#expressBodyLimit;
    this.#expressBodyLimit = undefined;
    expressBodyLimit?.();
    for (const wrapper of this.discovery.getControllers()) {
      this.#noteInstance(wrapper);
      const { metatype, instance } = wrapper;
      if (!metatype || !instance) continue;
      const read = (target: object) =>
        this.reflector.get<IdempotentOptions | false | undefined>(
          IDEMPOTENT_METADATA,
          target as () => unknown,
        );
      const found = [read(metatype)];
      const prototype = Object.getPrototypeOf(instance) as Record<string, object>;
      for (const name of this.scanner.getAllMethodNames(prototype)) {
        const method = prototype[name];
        if (method) found.push(read(method));
      }
      for (const route of found) if (route) this.handlerFor(route);
    }
  }

  /**
   * The controller instances Nest calls a controller class's routes on (one per module that
   * declares it), or undefined where that is not known: a class not found at startup, or one
   * of a request scope (Nest makes an instance per request).
   * @internal
   */
  controllerInstances(controller: unknown): ReadonlySet<object> | undefined {
    return this.#instances.get(controller) ?? undefined;
  }

  /** Instances by controller class: null once one of them is not a single instance. */
  readonly #instances = new Map<unknown, Set<object> | null>();

  #noteInstance(wrapper: {
    metatype?: unknown;
    instance?: unknown;
    isDependencyTreeStatic?(): boolean;
  }): void {
    const { metatype, instance } = wrapper;
    if (typeof metatype !== 'function') return;
    const single =
      typeof instance === 'object' &&
      instance !== null &&
      typeof wrapper.isDependencyTreeStatic === 'function' &&
      wrapper.isDependencyTreeStatic();
    // Nest names the class of a call by its instance's constructor (`context.getClass()`).
    const classes = new Set([metatype, single ? (instance as object).constructor : metatype]);
    for (const one of classes) {
      const known = this.#instances.get(one);
      if (!single || known === null) this.#instances.set(one, null);
      else if (known) known.add(instance as object);
      else this.#instances.set(one, new Set([instance as object]));
    }
  }

  /** @internal Nest's shutdown hook. */
  async onApplicationShutdown(): Promise<void> {
    if (this.#shutdownDrainMs !== 0) await this.drain(this.#shutdownDrainMs);
  }
}
