import { PROBLEM_TYPES } from '@idem/http';
import { onTestFinished } from 'vitest';
import { type ChargesApp, createChargesApp } from './charges-app.js';
import {
  type Fault,
  type FaultServer,
  type SeenRequest,
  startFaultServer,
} from './fault-server.js';
import { idempotent } from './idempotent-app.js';

export interface Harness {
  app: ChargesApp;
  server: FaultServer;
  url: string;
}

/**
 * A charges app behind the idempotency layer behind the fault injector, on loopback, closed
 * when the test that started it ends. (Not an `afterEach` here: this module is evaluated once
 * per worker process, so a hook registered at its top level would close only the first test
 * file's servers, and every later file in that process would leave its servers listening.)
 */
export async function startHarness(
  fault?: (request: SeenRequest) => Fault | undefined,
  options: { leaseMs?: number } = {},
): Promise<Harness> {
  const app = createChargesApp();
  const server = await startFaultServer({
    handler: idempotent(app.handler, options),
    ...(fault ? { fault } : {}),
  });
  onTestFinished(() => server.close());
  return { app, server, url: server.url };
}

/** Faults by arrival order: the n-th request the server sees gets `plan[n - 1]`. */
export function inOrder(
  ...plan: (Fault | undefined)[]
): (request: SeenRequest) => Fault | undefined {
  return (request) => plan[request.n - 1];
}

/** A sleep that records the waits asked for and waits at most `maxMs` of each. */
export function recordingSleep(maxMs = 5): {
  waits: number[];
  sleep: (ms: number, signal?: AbortSignal) => Promise<void>;
} {
  const waits: number[] = [];
  return {
    waits,
    sleep: (ms, signal) => {
      waits.push(ms);
      return new Promise<void>((resolve, reject) => {
        const onAbort = () => {
          clearTimeout(timer);
          reject(signal?.reason);
        };
        const timer = setTimeout(
          () => {
            signal?.removeEventListener('abort', onAbort);
            resolve();
          },
          Math.min(ms, maxMs),
        );
        signal?.addEventListener('abort', onAbort, { once: true });
      });
    },
  };
}

export function postJson(body: unknown, init: RequestInit = {}): RequestInit {
  return {
    method: 'POST',
    ...init,
    headers: { 'content-type': 'application/json', ...(init.headers as Record<string, string>) },
    body: JSON.stringify(body),
  };
}

/**
 * The 409 an idem server answers while the key is in progress (`@idem/http`'s problem type),
 * with the `Retry-After` given, or none.
 */
export function inProgressAnswer(retryAfter?: string): Fault {
  return {
    kind: 'status',
    status: 409,
    headers: {
      'content-type': 'application/problem+json',
      ...(retryAfter === undefined ? {} : { 'retry-after': retryAfter }),
    },
    body: JSON.stringify({
      type: PROBLEM_TYPES.inProgress,
      title: 'Request in progress',
      status: 409,
    }),
  };
}
