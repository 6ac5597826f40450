import type { IdemEvent } from '@idem/core';
import { expect } from 'vitest';
import { send } from './client.js';

/** Holds the event loop, as a long synchronous task of another request would. */
function holdLoop(ms: number): void {
  const end = performance.now() + ms;
  while (performance.now() < end);
}

/** See {@link lateStartProbe}. */
export interface LateStartProbe {
  /** The middleware's `onEvent`: arms the hold at the next `miss`. */
  onEvent(event: IdemEvent): void;
  /** Called by the route first thing: when it started. */
  started(): void;
  /**
   * Sends one keyed request to `path` for each depth from 1 to 12, the event loop held for the
   * lease and 20 ms `depth` microtasks after the acquisition's `miss`; asserts that the route
   * never started after the hold (a start past the lease's runway), that each answer is the
   * route's 201 or a 503 refusal whose retry runs, and that some depth was refused.
   */
  check(url: string, path: string): Promise<void>;
}

let counter = 0;

/**
 * A check that an integration judges the recorder's `lateStart()` where the route starts: the
 * route must not start once the event loop was held up past the lease's runway since the
 * acquisition (the key is given back and 503 answered). Give the middleware under test
 * `leaseMs` and the probe's `onEvent`, call `started()` in its route, then `check(url, path)`.
 */
export function lateStartProbe(leaseMs: number): LateStartProbe {
  const late = { armed: 0, t0: 0, heldEnd: -1, start: -1 };
  return {
    onEvent(event) {
      if (event.type !== 'miss' || late.armed === 0) return;
      const depth = late.armed;
      late.armed = 0;
      late.t0 = performance.now();
      const step = (d: number) => {
        if (d > 1) queueMicrotask(() => step(d - 1));
        else {
          holdLoop(leaseMs + 20);
          late.heldEnd = performance.now() - late.t0;
        }
      };
      queueMicrotask(() => step(depth));
    },
    started() {
      late.start = performance.now() - late.t0;
    },
    async check(url, path) {
      const startedLate: number[] = [];
      const refused: number[] = [];
      for (let depth = 1; depth <= 12; depth++) {
        const key = `late-start-${process.pid}-${++counter}`;
        Object.assign(late, { armed: depth, heldEnd: -1, start: -1 });
        // A route started past the runway may lose its lease before it answers: the connection
        // is then dropped (status 0 here).
        const answer = await send(url, path, { key, body: { a: 1 } }).catch(() => ({
          status: 0,
        }));
        if (late.start >= 0 && late.heldEnd >= 0 && late.start >= late.heldEnd)
          startedLate.push(depth);
        if (startedLate.length > 0) break;
        expect([201, 503]).toContain(answer.status);
        if (answer.status === 503) {
          refused.push(depth);
          expect(late.start).toBe(-1);
          const retry = await send(url, path, { key, body: { a: 1 } });
          expect(retry.status).toBe(201);
        }
      }
      expect(startedLate).toEqual([]);
      expect(refused.length).toBeGreaterThan(0);
    },
  };
}
