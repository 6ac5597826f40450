/**
 * What the review test files share: a counter of the runs each handler made, and the
 * interceptors they put between `@idem/nestjs`'s and the handler.
 */
import { EventEmitter } from 'node:events';
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

/** Where a timeout outside idem's interceptor is mounted (nest33). */
export type Outer = 'before the router' | 'an interceptor outside';
/** Each platform with each outer timeout (nest33). */
export const OUTER_TIMEOUTS: ReadonlyArray<['express' | 'fastify', Outer]> = [
  ['express', 'before the router'],
  ['fastify', 'before the router'],
  ['express', 'an interceptor outside'],
  ['fastify', 'an interceptor outside'],
];

/**
 * Mounts a timeout outside idem's interceptor: `before` (scenario-app's `outerTimeout`: Express
 * middleware or a Fastify onRequest hook, 503 after 100 ms) before Nest's router, or
 * {@link TimeoutInterceptor} as a global interceptor (408 after 150 ms).
 */
export function mountOuterTimeout(
  outer: Outer,
  before: (app: unknown) => void,
): (app: { useGlobalInterceptors(...interceptors: NestInterceptor[]): unknown }) => void {
  return (app) => {
    if (outer === 'before the router') before(app);
    else app.useGlobalInterceptors(new TimeoutInterceptor());
  };
}

/** Sends until the key is no longer held (409), at most 40 times 50 ms; the last status. */
export async function afterHeld(post: () => Promise<{ status: number }>): Promise<number> {
  let last = 409;
  for (let i = 0; i < 40 && last === 409; i += 1) {
    await new Promise((resolve) => setTimeout(resolve, 50));
    last = (await post()).status;
  }
  return last;
}

/**
 * A gate the handler's work waits on (nest33): closed by a check before its first request and
 * opened once the check saw the key held, so that no load on the machine makes the work end
 * before the check looked.
 */
export function workGate(): { pass(): Promise<void>; close(): () => void } {
  let gate: Promise<void> = Promise.resolve();
  return {
    pass: () => gate,
    close: () => {
      let open!: () => void;
      gate = new Promise((resolve) => {
        open = resolve;
      });
      return open;
    },
  };
}

/** A pool made outside any request: its callbacks run in its own async context, as pg's do. */
export class CallbackPool {
  private readonly jobs: Array<() => void> = [];
  private readonly events = new EventEmitter();
  private readonly timer: NodeJS.Timeout;
  constructor() {
    this.events.on('ready', () => {
      for (const job of this.jobs.splice(0)) job();
    });
    this.timer = setInterval(() => this.events.emit('ready'), 10);
    this.timer.unref();
  }
  query(callback: () => void): void {
    this.jobs.push(callback);
  }
  close(): void {
    clearInterval(this.timer);
  }
}
