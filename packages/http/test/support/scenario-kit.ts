import { randomUUID } from 'node:crypto';
import { expect } from 'vitest';
import type { HttpIdempotencyOptions } from '../../src/index.js';
import type { Behaviour } from './behaviours.js';
import { type Exchange, json, type SendOptions } from './client.js';
import type { SpiedStore } from './stores.js';

/** Header the drivers map to the scope's principal. */
export const TENANT_HEADER = 'x-tenant';

/** What a driver gets to build its app: adapter options (all but the hooks) and the routes. */
export interface ScenarioAppConfig {
  options: Omit<HttpIdempotencyOptions<never>, 'scope' | 'fingerprint'>;
  /** Path -> behaviour; drivers serve each path for every method. */
  routes: Map<string, Behaviour>;
}

/** Starts one framework's app on loopback with the idempotency layer mounted. */
export interface FrameworkDriver {
  name: string;
  start(config: ScenarioAppConfig): Promise<{ url: string; close(): Promise<void> }>;
}

export interface ScenarioContext {
  post(path: string, options?: SendOptions): Promise<Exchange>;
  calls(path: string): number;
  spy: SpiedStore;
}

export interface Scenario {
  name: string;
  options?: Partial<ScenarioAppConfig['options']>;
  /** Delay every `complete` of the store by this many ms. */
  completeDelayMs?: number;
  /** Replace the store by one whose calls fail at once, or never answer. */
  storeDown?: 'failing' | 'hanging';
  run(ctx: ScenarioContext): Promise<void>;
}

export const REPLAYED = 'idempotent-replayed';

export async function waitFor(condition: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 5_000;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`Timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

export function expectProblem(exchange: Exchange, status: number, type: string): void {
  expect(exchange.status).toBe(status);
  expect(exchange.headers['content-type']).toMatch(/^application\/problem\+json/);
  expect(json(exchange)).toMatchObject({ type, status });
}

export const newKey = () => `key-${randomUUID()}`;

/** Starts a slow charge (300 ms) with `key` and waits until its handler runs. */
export async function startSlowCharge(
  ctx: ScenarioContext,
  key: string,
): Promise<{ done: Promise<Exchange> }> {
  const done = ctx.post('/charges?delay=300', { key, body: { amount: 1 } });
  await waitFor(() => ctx.calls('/charges') === 1, 'the first request to start');
  return { done };
}
