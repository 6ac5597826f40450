/**
 * What the review test files share: a counter of the runs each handler made, and the
 * interceptors they put between `@idem/nestjs`'s and the handler.
 */
import {
  type CallHandler,
  type ExecutionContext,
  Injectable,
  type NestInterceptor,
  type PipeTransform,
  RequestTimeoutException,
} from '@nestjs/common';
import { catchError, type Observable, retry, TimeoutError, throwError, timeout } from 'rxjs';

const runs = new Map<string, number>();
/** Counts one run of `name`; answers how many there were, this one included. */
export const ran = (name: string): number => {
  const n = (runs.get(name) ?? 0) + 1;
  runs.set(name, n);
  return n;
};
/** How many runs of `name` were counted. */
export const count = (name: string): number => runs.get(name) ?? 0;

/** A `TimeoutError` as Nest's 408, anything else as it is. */
export const toTimeout = (error: unknown) =>
  throwError(() =>
    error instanceof TimeoutError ? new RequestTimeoutException() : (error as Error),
  );

/** The TimeoutInterceptor of Nest's documentation (Interceptors > Timeout), at 150 ms. */
@Injectable()
export class TimeoutInterceptor implements NestInterceptor {
  intercept(_context: ExecutionContext, next: CallHandler): Observable<unknown> {
    return next.handle().pipe(timeout(150), catchError(toTimeout));
  }
}

/** The same with one retry of the call (a common pairing): Nest calls the handler again. */
@Injectable()
export class TimeoutRetryInterceptor implements NestInterceptor {
  intercept(_context: ExecutionContext, next: CallHandler): Observable<unknown> {
    return next.handle().pipe(timeout(150), retry(1), catchError(toTimeout));
  }
}

/**
 * Jobs for a worker started lazily by the first request that needs it, from a pipe (so in that
 * request's async context, outside its handler): {@link LazyWorkerPipe}.
 */
export const jobs: Array<() => unknown> = [];
let worker: NodeJS.Timeout | undefined;

/** Starts the worker that drains {@link jobs} (every 10 ms), in the request's async context. */
@Injectable()
export class LazyWorkerPipe implements PipeTransform {
  transform(value: unknown) {
    worker ??= setInterval(() => {
      for (const job of jobs.splice(0)) job();
    }, 10);
    worker.unref();
    return value;
  }
}

/** Stops the worker: the next request through {@link LazyWorkerPipe} starts it again. */
export function stopWorker(): void {
  if (worker) clearInterval(worker);
  worker = undefined;
}
