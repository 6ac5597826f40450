import type { IdempotencyContext } from '@idem/http';
import { createParamDecorator, type ExecutionContext, SetMetadata } from '@nestjs/common';
import { trackedHandler } from './handler-run.js';
import { IDEMPOTENT_METADATA, type IdempotentOptions } from './options.js';

/** Where `@Get()`, `@Post()`... keep a route's path and method (Nest 11 and 12). */
const PATH_METADATA = 'path';
const METHOD_METADATA = 'method';

type Reflecting = { hasOwnMetadata?(key: unknown, target: object): boolean };

/**
 * The route handlers of a controller class (methods with a route decorator), tracked: its own
 * and those it inherits (a tracked copy is defined on the class's own prototype, so a base
 * class shared with other controllers is left as it is).
 */
function trackRoutes(target: abstract new (...args: never[]) => unknown): void {
  const prototype = target.prototype as Record<string, unknown>;
  const reflect = Reflect as unknown as Reflecting;
  if (typeof reflect.hasOwnMetadata !== 'function') return;
  const seen = new Set<string>(['constructor']);
  for (
    let source: object | null = prototype;
    source !== null && source !== Object.prototype;
    source = Object.getPrototypeOf(source) as object | null
  ) {
    for (const name of Object.getOwnPropertyNames(source)) {
      if (seen.has(name)) continue;
      seen.add(name);
      const descriptor = Object.getOwnPropertyDescriptor(source, name);
      const method = descriptor?.value as unknown;
      if (typeof method !== 'function' || !descriptor) continue;
      if (!reflect.hasOwnMetadata(PATH_METADATA, method)) continue;
      if (!reflect.hasOwnMetadata(METHOD_METADATA, method)) continue;
      Object.defineProperty(prototype, name, {
        ...descriptor,
        value: trackedHandler(method as (...args: never[]) => unknown, name),
      });
    }
  }
}

/**
 * Makes a route (on a method) or every route of a controller (on the class) idempotent by the
 * `Idempotency-Key` header, with the module's options overridden by `options`;
 * `@Idempotent(false)` on a method exempts it from its controller's. Routes without it are
 * left alone. As in every `@idem` adapter, only POST and PATCH need a key unless `methods`
 * says otherwise (set it for a PUT or DELETE route).
 */
export function Idempotent(
  options: IdempotentOptions | false = {},
): ClassDecorator & MethodDecorator {
  const mark = SetMetadata(IDEMPOTENT_METADATA, options);
  // The handler is wrapped so the interceptor learns when it settled (see handler-run.ts).
  return ((target: object, key?: string | symbol, descriptor?: PropertyDescriptor) => {
    if (descriptor) {
      if (options !== false && typeof descriptor.value === 'function') {
        descriptor.value = trackedHandler(
          descriptor.value as (...args: never[]) => unknown,
          key as string | symbol,
        );
      }
      return mark(target, key as string | symbol, descriptor);
    }
    mark(target as () => unknown);
    if (options !== false) trackRoutes(target as abstract new (...args: never[]) => unknown);
    return target;
  }) as ClassDecorator & MethodDecorator;
}

/**
 * Parameter decorator: the execution context (key, fence, abort signal) of the request, or
 * undefined when it was not run idempotently (not a decorated route, a method that needs no
 * key, an optional key absent, or the store down with `failOpen`). Pass `fence` to
 * downstream writes that can reject a stale executor.
 */
export const IdemContext = createParamDecorator(
  (_data: unknown, context: ExecutionContext): IdempotencyContext | undefined =>
    context.switchToHttp().getRequest<{ idempotency?: IdempotencyContext }>().idempotency,
);
