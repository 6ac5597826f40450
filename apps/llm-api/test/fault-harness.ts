/**
 * The harness of the store fault tests: the app behind a TCP proxy of the test's own in front
 * of its store (the proxy goes silent or resets connections, the store itself is never
 * touched), and the probes sent during a fault and after it.
 */
import { afterAll, beforeAll, expect } from 'vitest';
import { parseConfig } from '../src/config.js';
import { type RunningServer, startServer } from '../src/server.js';
import { answer, expectUnavailable, firstSuccess, probes } from './answers.js';
import { BOUND_MS, LEASE_MS, STORE_TIMEOUT_MS, sleep } from './fault-stack.js';
import { startTcpProxy, type TcpProxy } from './tcp-proxy.js';

/** The app and the proxy in front of its store. */
export interface ProxiedApp {
  proxy: TcpProxy;
  server: RunningServer;
}

/** The store of a {@link useAppBehindProxy}: where the proxy forwards, and its teardown. */
interface ProxiedStore {
  /** `http://host:port` of the store. */
  target: string;
  /** Runs last, after the app and the proxy closed. */
  stop(): Promise<void>;
}

/**
 * Before the tests of the enclosing `describe` (within `hookTimeoutMs`): `startStore()`, a
 * TCP proxy in front of it, and the app (port 0, 3 s leases, the 1 s store timeout, 1 ms model
 * chunks) on the variables `env(proxy)` adds or overrides. After them: the proxy set to pass,
 * the app closed, the proxy closed, the store's `stop()`. Returns a getter for app and proxy.
 */
export function useAppBehindProxy(options: {
  startStore(): Promise<ProxiedStore>;
  env(proxy: TcpProxy): Record<string, string>;
  hookTimeoutMs: number;
}): () => ProxiedApp {
  let store: ProxiedStore | undefined;
  let proxy: TcpProxy | undefined;
  let server: RunningServer | undefined;
  beforeAll(async () => {
    store = await options.startStore();
    proxy = await startTcpProxy(store.target);
    server = await startServer(
      parseConfig({
        PORT: '0',
        IDEM_LEASE_MS: String(LEASE_MS),
        IDEM_STORE_TIMEOUT_MS: String(STORE_TIMEOUT_MS),
        MODEL_CHUNK_DELAY_MS: '1',
        ...options.env(proxy),
      }),
    );
  }, options.hookTimeoutMs);
  afterAll(async () => {
    proxy?.set('pass');
    await server?.close();
    await proxy?.close();
    await store?.stop();
  });
  return () => {
    if (!proxy || !server) throw new Error('The app behind the proxy did not start');
    return { proxy, server };
  };
}

/**
 * Probes every endpoint ({@link probes}) of the app at `base` for `ms`, `pauseMs` between
 * rounds, expecting each answer 503 + Retry-After within the bound. Returns the rounds sent.
 */
export async function probeUnavailableFor(
  base: string,
  ms: number,
  pauseMs: number,
): Promise<number> {
  const ends = Date.now() + ms;
  let rounds = 0;
  while (Date.now() < ends) {
    const answers = await Promise.all(
      probes(base).map(async (p) => ({
        name: p.name,
        got: await answer(p.url, p.init, BOUND_MS),
      })),
    );
    for (const { name, got } of answers) expectUnavailable(name, got);
    rounds += 1;
    await sleep(pauseMs);
  }
  return rounds;
}

/**
 * Once the fault is over: sends fresh keyed messages to the app at `base` (up to `attempts`,
 * 100 ms apart) until one is created, logs `report(recovery)`, and expects only 503s before
 * it, the 201, and /readyz and /v1/usage 200.
 */
export async function expectRecovery(
  base: string,
  attempts: number,
  report: (recovery: { ms: number; statuses: number[] }) => string,
): Promise<void> {
  const back = Date.now();
  const recovery = await firstSuccess(base, attempts, 100, BOUND_MS, back);
  console.log(report(recovery));
  expect(recovery.statuses.every((s) => s === 503 || s === 201)).toBe(true);
  expect(recovery.recovered).toBe(true);
  expect((await answer(`${base}/readyz`, {}, BOUND_MS)).status).toBe(200);
  expect((await answer(`${base}/v1/usage`, {}, BOUND_MS)).status).toBe(200);
}
