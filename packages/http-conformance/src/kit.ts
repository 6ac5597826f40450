import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { IdemEvent } from '@idem/core';
import { expect } from 'vitest';
import { type Exchange, json, type SendOptions } from './client.js';
import type { ConformanceAdapterOptions } from './options.js';
import type { SpiedStore, StoreFaults } from './stores.js';

/**
 * The problem `type` URIs of the HTTP contract. The suite spells them out rather than
 * importing them from an implementation: they are part of the published contract.
 */
export const PROBLEM = {
  missingKey: 'https://idem.dev/problems/missing-key',
  invalidKey: 'https://idem.dev/problems/invalid-key',
  bodyTooLarge: 'https://idem.dev/problems/body-too-large',
  malformedBody: 'https://idem.dev/problems/malformed-body',
  inProgress: 'https://idem.dev/problems/in-progress',
  keyReused: 'https://idem.dev/problems/key-reused',
  storeUnavailable: 'https://idem.dev/problems/store-unavailable',
  noPrincipal: 'https://idem.dev/problems/no-principal',
  outcomeNotRecorded: 'https://idem.dev/problems/outcome-not-recorded',
  handlerFailed: 'https://idem.dev/problems/handler-failed',
  codingNotAcceptable: 'https://idem.dev/problems/coding-not-acceptable',
} as const;

/** Response header that marks a replay. */
export const REPLAYED = 'idempotent-replayed';

/**
 * The response headers the contract records and replays by default (`@idem/http`'s
 * `DEFAULT_RECORDED_HEADERS`, spelled out here as part of the published contract). A replay
 * carries each of them exactly as the first response did, and none the first one lacked.
 */
export const RECORDED_HEADERS: readonly string[] = [
  'cache-control',
  'content-disposition',
  'content-encoding',
  'content-language',
  'content-location',
  'content-type',
  'etag',
  'expires',
  'last-modified',
  'link',
  'location',
  'retry-after',
  'vary',
  'x-content-type-options',
];

/** What a scenario can do and see. */
export interface ScenarioContext {
  /** Sends a request (POST unless `method` says otherwise) to the app on a fresh connection. */
  post(path: string, options?: SendOptions): Promise<Exchange>;
  /** How many times the route's behaviour started. */
  calls(path: string): number;
  /** The store as the integration used it. */
  spy: SpiedStore;
  /** Events the integration passed on from `onEvent`. */
  events: IdemEvent[];
  /** Warnings the integration passed on from `onWarning`. */
  warnings: string[];
}

/** One check of the HTTP contract, run on a fresh app, store and key prefix. */
export interface Scenario {
  /** The concern it belongs to (protocol, outcomes, isolation, ...). */
  group: string;
  name: string;
  /** Options of the integration beyond the store and the suite's listeners. */
  options?: Partial<Omit<ConformanceAdapterOptions, 'store'>>;
  /** Faults the store wrapper injects. */
  faults?: StoreFaults;
  /** Replace the store by one whose calls fail at once, or never answer. */
  storeDown?: 'failing' | 'hanging';
  run(ctx: ScenarioContext): Promise<void>;
}

/** Polls `condition` every `pollMs` (5), for at most `timeoutMs`. */
export async function waitFor(
  condition: () => boolean,
  what: string,
  timeoutMs = 5_000,
  pollMs = 5,
) {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`Timed out waiting for ${what}`);
    await sleep(pollMs);
  }
}

/**
 * The library's own problem answer (400, 409, 413, 422, 500, 503): the status, an RFC 9457
 * body of `type`, and no replay marker (it is no recorded outcome; a client that trusts the
 * marker would stop retrying a 409).
 */
export function expectProblem(exchange: Exchange, status: number, type: string): void {
  expect(exchange.status, `status of ${exchange.body.toString('utf8').slice(0, 200)}`).toBe(status);
  expect(exchange.headers['content-type']).toMatch(/^application\/problem\+json/);
  expect(json(exchange)).toMatchObject({ type, status });
  expect(
    exchange.headers[REPLAYED],
    `${REPLAYED} on a ${status} ${type} problem answer`,
  ).toBeUndefined();
}

/**
 * `replay` replays `original`: the same status, the replay marker, the same body bytes and
 * every recorded header ({@link RECORDED_HEADERS}, Content-Type first) with the same value,
 * none added or dropped.
 */
export function expectReplayOf(replay: Exchange, original: Exchange): void {
  expect(replay.status).toBe(original.status);
  expect(replay.headers[REPLAYED]).toBe('true');
  expect(replay.body.equals(original.body)).toBe(true);
  const names = ['content-type', ...RECORDED_HEADERS.filter((name) => name !== 'content-type')];
  for (const name of names) {
    expect(replay.headers[name], `the replay's ${name} header`).toEqual(original.headers[name]);
  }
}

export const newKey = () => `key-${randomUUID()}`;

/** Starts a slow charge (300 ms) with `key` and waits until its handler runs. */
export async function startSlowCharge(
  ctx: ScenarioContext,
  key: string,
  options: SendOptions = {},
): Promise<{ done: Promise<Exchange> }> {
  const before = ctx.calls('/charges');
  const done = ctx.post('/charges?delay=300', { key, body: { amount: 1 }, ...options });
  await waitFor(() => ctx.calls('/charges') === before + 1, 'the first request to start');
  return { done };
}
