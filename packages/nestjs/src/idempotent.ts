import type { IdempotencyContext } from '@idem/http';
import { createParamDecorator, type ExecutionContext, SetMetadata } from '@nestjs/common';
import { IDEMPOTENT_METADATA, type IdempotentOptions } from './options.js';

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
  return SetMetadata(IDEMPOTENT_METADATA, options);
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
