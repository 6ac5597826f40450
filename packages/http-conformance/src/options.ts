import type { IdemEventListener, IdempotencyStore } from '@idem/core';
import type { Behaviour } from './routes.js';
import type { StoreKind } from './stores.js';

/**
 * The options a scenario hands the integration under test. They are a subset of
 * `@idem/http`'s `HttpIdempotencyOptions` (structurally the same types), so a driver built on
 * `@idem/http` spreads them into its own options as they are. A driver MUST pass every one
 * of them on, and add the `scope` hook described at {@link FrameworkDriver}.
 */
export interface ConformanceAdapterOptions {
  store: IdempotencyStore;
  wait?: { timeoutMs: number; pollMs?: number } | false;
  isFinal?: (response: { status: number; headers: Headers }) => boolean;
  failOpen?: boolean;
  maxBodyBytes?: number;
  maxOutcomeBytes?: number;
  storeTimeoutMs?: number;
  completionWaitMs?: number;
  unavailableRetryAfterSeconds?: number;
  leaseMs?: number;
  heartbeatMs?: number | false;
  maxHoldMs?: number;
  onEvent?: IdemEventListener;
  onWarning?: (message: string) => void;
}

/** What a driver gets to build its app for one scenario. */
export interface ScenarioAppConfig {
  /** The integration's options, to pass on as they are (plus the `scope` hook). */
  options: ConformanceAdapterOptions;
  /** Path -> behaviour. A driver serves each path for every method, at exactly that path. */
  routes: ReadonlyMap<string, Behaviour>;
}

/** An app listening on loopback. */
export interface RunningApp {
  /** Its base URL, e.g. `http://127.0.0.1:43121`. */
  url: string;
  /** Stops it; resolves once it no longer listens. */
  close(): Promise<void>;
}

/**
 * Starts a real app of the framework on loopback (`127.0.0.1`, port 0) for one scenario.
 * The driver MUST:
 *
 * - mount the integration under test with `config.options` and a scope hook whose principal
 *   is the value of the {@link TENANT_HEADER} request header, and `undefined` when the
 *   header is absent (the suite checks that such a request gets the 500 `no-principal`
 *   problem);
 * - serve every path of `config.routes` for every method with the framework's default
 *   routing (its own rules for trailing slashes and case), parsing JSON bodies the
 *   framework's usual way and `application/octet-stream` bodies as bytes;
 * - call the behaviour with the parsed body, the query string and the tenant header, and
 *   write its {@link Reply} natively: status, headers, then the body in one piece, or each
 *   chunk of a streamed body as it comes (so the client sees chunks before the end); when
 *   the stream throws, abort the response the framework's way;
 * - leave errors thrown by the behaviour to the framework's own error handling (a 500).
 */
export interface FrameworkDriver {
  start(config: ScenarioAppConfig): Promise<RunningApp>;
}

/** Options of {@link describeHttpConformance}. */
export interface HttpConformanceOptions extends FrameworkDriver {
  /**
   * The stores every scenario runs on, each in its own `describe`.
   * @default [memoryStores()]
   */
  stores?: readonly StoreKind[];
  /** Per-scenario timeout in ms. @default 30_000 */
  timeoutMs?: number;
}

/** Request header a driver maps to the scope's principal. */
export const TENANT_HEADER = 'x-tenant';
