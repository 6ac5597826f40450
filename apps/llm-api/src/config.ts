/**
 * Configuration from the environment. Every problem is collected and reported at once, so a
 * bad deployment fails at start with one clear message instead of at the first request.
 */

/** Where idempotency records, the token ledger and the counters live. */
export type StoreConfig =
  | {
      kind: 'memory';
      /** `IDEM_MEMORY_MAX_ENTRIES`: most records kept. @default the store's (100_000) */
      maxEntries?: number;
      /** `IDEM_MEMORY_MAX_OUTCOME_BYTES`: largest recorded answer. @default the store's (8 MiB) */
      maxOutcomeBytes?: number;
      /** `IDEM_MEMORY_MAX_BYTES`: total bytes of records kept. @default the store's (128 MiB) */
      maxBytes?: number;
    }
  | { kind: 'redis'; url: string }
  | { kind: 'dynamodb'; table: string; endpoint: string | undefined; region: string }
  | { kind: 'postgres'; url: string };

/** Which model answers. */
export type ModelConfig =
  | { kind: 'local'; chunkDelayMs: number }
  | { kind: 'upstream'; url: string; apiKey: string | undefined; timeoutMs: number };

/** The server's whole configuration. Durations are milliseconds. */
export interface Config {
  /** `HOST` @default '127.0.0.1' */
  host: string;
  /** `PORT` (0 picks a free port) @default 3000 */
  port: number;
  store: StoreConfig;
  model: ModelConfig;
  /** `IDEM_KEY_PREFIX`: prefix of every Redis key / DynamoDB item. @default 'llm-api:' */
  keyPrefix: string;
  /** `IDEM_LEASE_MS`: lease of an in-progress request. @default 30_000 */
  leaseMs: number;
  /**
   * `IDEM_STORE_TIMEOUT_MS`: limit of every store call (idempotency records, ledger,
   * counters, readiness). A request the store cannot serve in time gets 503 + Retry-After.
   * @default 2_000, or a third of the lease when that is shorter
   */
  storeTimeoutMs: number;
  /** `SHUTDOWN_TIMEOUT_MS`: longest wait for in-flight requests on SIGTERM. @default 25_000 */
  shutdownTimeoutMs: number;
  /**
   * `IDEM_OTEL` (`on` or `off`): report idem's spans and metrics through `@opentelemetry/api`
   * (`@idem/otel`). They go to the OpenTelemetry SDK the process registers; without one the
   * API records nothing. @default true
   */
  otel: boolean;
}

/** Raised when the environment does not describe a usable configuration. */
export class ConfigError extends Error {
  /** One line per problem found. */
  readonly problems: readonly string[];

  constructor(problems: readonly string[]) {
    super(
      `Invalid configuration:\n${problems.map((p) => `  - ${p}`).join('\n')}\n` +
        'See apps/llm-api/README.md for the environment variables.',
    );
    this.name = 'ConfigError';
    this.problems = problems;
  }
}

type Env = Readonly<Record<string, string | undefined>>;

const TABLE_NAME = /^[A-Za-z0-9_.-]{3,255}$/;
const REGION = /^[a-z]{2}(-[a-z]+)+-\d+$/;

/** Parses the environment; throws {@link ConfigError} listing every problem found. */
export function parseConfig(env: Env): Config {
  const problems: string[] = [];
  // An empty variable counts as unset: `FOO= node main.js` is a common way to clear one.
  const get = (name: string): string | undefined => {
    const value = env[name]?.trim();
    return value === undefined || value === '' ? undefined : value;
  };

  const integer = (name: string, fallback: number, min: number, max: number): number => {
    const raw = get(name);
    if (raw === undefined) return fallback;
    if (!/^\d+$/.test(raw) || Number(raw) < min || Number(raw) > max) {
      problems.push(`${name}=${JSON.stringify(raw)} is not an integer from ${min} to ${max}`);
      return fallback;
    }
    return Number(raw);
  };

  const url = (name: string, protocols: readonly string[]): string | undefined => {
    const raw = get(name);
    if (raw === undefined) return undefined;
    let parsed: URL;
    try {
      parsed = new URL(raw);
    } catch {
      problems.push(`${name}=${JSON.stringify(raw)} is not a URL`);
      return undefined;
    }
    if (!protocols.includes(parsed.protocol)) {
      problems.push(
        `${name} must use ${protocols.map((p) => `${p}//`).join(' or ')}, not ${parsed.protocol}//`,
      );
      return undefined;
    }
    return raw;
  };

  const host = get('HOST') ?? '127.0.0.1';
  if (/\s|\//.test(host))
    problems.push(`HOST=${JSON.stringify(host)} is not a host name or address`);
  const port = integer('PORT', 3000, 0, 65_535);

  const redisUrl = url('REDIS_URL', ['redis:', 'rediss:']);
  const table = get('DYNAMODB_TABLE');
  const endpoint = url('DYNAMODB_ENDPOINT', ['http:', 'https:']);
  const region = get('AWS_REGION') ?? get('AWS_DEFAULT_REGION') ?? 'us-east-1';
  const optional = (name: string, min: number, max: number): number | undefined =>
    get(name) === undefined ? undefined : integer(name, min, min, max);
  const maxEntries = optional('IDEM_MEMORY_MAX_ENTRIES', 1, 100_000_000);
  const maxOutcomeBytes = optional('IDEM_MEMORY_MAX_OUTCOME_BYTES', 1, 1_073_741_824);
  const maxBytes = optional('IDEM_MEMORY_MAX_BYTES', 65_536, 68_719_476_736);
  let store: StoreConfig = {
    kind: 'memory',
    ...(maxBytes === undefined ? {} : { maxBytes }),
    ...(maxEntries === undefined ? {} : { maxEntries }),
    ...(maxOutcomeBytes === undefined ? {} : { maxOutcomeBytes }),
  };
  const databaseUrl = url('DATABASE_URL', ['postgres:', 'postgresql:']);
  const chosen = ['REDIS_URL', 'DYNAMODB_TABLE', 'DATABASE_URL'].filter(
    (n) => get(n) !== undefined,
  );
  if (chosen.length > 1) {
    const all = chosen.length === 2 ? 'both' : 'all';
    problems.push(`${chosen.join(' and ')} are ${all} set; choose one store`);
  } else if (databaseUrl !== undefined) {
    store = { kind: 'postgres', url: databaseUrl };
  } else if (redisUrl !== undefined) {
    store = { kind: 'redis', url: redisUrl };
  } else if (table !== undefined) {
    if (!TABLE_NAME.test(table)) {
      problems.push(
        `DYNAMODB_TABLE=${JSON.stringify(table)} is not a table name (3 to 255 of A-Z a-z 0-9 _ . -)`,
      );
    }
    if (!REGION.test(region)) problems.push(`AWS_REGION=${JSON.stringify(region)} is not a region`);
    store = { kind: 'dynamodb', table, endpoint, region };
  }
  if (get('DYNAMODB_ENDPOINT') !== undefined && table === undefined) {
    problems.push('DYNAMODB_ENDPOINT is set but DYNAMODB_TABLE is not');
  }

  const upstreamUrl = url('UPSTREAM_URL', ['http:', 'https:']);
  const apiKey = get('UPSTREAM_API_KEY');
  if (apiKey !== undefined && get('UPSTREAM_URL') === undefined) {
    problems.push('UPSTREAM_API_KEY is set but UPSTREAM_URL is not');
  }
  const chunkDelayMs = integer('MODEL_CHUNK_DELAY_MS', 15, 0, 10_000);
  const upstreamTimeoutMs = integer('UPSTREAM_TIMEOUT_MS', 120_000, 1, 3_600_000);
  const model: ModelConfig =
    upstreamUrl !== undefined
      ? {
          kind: 'upstream',
          url: upstreamUrl.replace(/\/+$/, ''),
          apiKey,
          timeoutMs: upstreamTimeoutMs,
        }
      : { kind: 'local', chunkDelayMs };

  const keyPrefix = get('IDEM_KEY_PREFIX') ?? 'llm-api:';
  if (keyPrefix.length > 100 || !/^[\x21-\x7e]+$/.test(keyPrefix)) {
    problems.push('IDEM_KEY_PREFIX must be 1 to 100 printable ASCII characters without spaces');
  }
  const leaseMs = integer('IDEM_LEASE_MS', 30_000, 100, 3_600_000);
  // A third of the lease when that is shorter: a heartbeat (every lease / 3) that times out
  // still leaves time for the next one before the lease passes.
  const storeTimeoutMs = integer(
    'IDEM_STORE_TIMEOUT_MS',
    Math.min(2_000, Math.max(50, Math.floor(leaseMs / 3))),
    50,
    60_000,
  );
  const shutdownTimeoutMs = integer('SHUTDOWN_TIMEOUT_MS', 25_000, 0, 3_600_000);

  if (storeTimeoutMs >= leaseMs) {
    problems.push(
      `IDEM_STORE_TIMEOUT_MS (${storeTimeoutMs}) must be shorter than IDEM_LEASE_MS (${leaseMs})`,
    );
  }

  const otelSetting = get('IDEM_OTEL') ?? 'on';
  if (otelSetting !== 'on' && otelSetting !== 'off') problems.push('IDEM_OTEL must be on or off');
  const otel = otelSetting !== 'off';

  if (problems.length > 0) throw new ConfigError(problems);
  return { host, port, store, model, keyPrefix, leaseMs, storeTimeoutMs, shutdownTimeoutMs, otel };
}

/** One line for the start-up log: what was chosen, without secrets. */
export function describeConfig(config: Config): string {
  const store =
    config.store.kind === 'memory'
      ? 'memory'
      : config.store.kind === 'redis' || config.store.kind === 'postgres'
        ? `${config.store.kind} ${redactUrl(config.store.url)}`
        : `dynamodb table ${config.store.table}${config.store.endpoint ? ` at ${config.store.endpoint}` : ''}`;
  const model =
    config.model.kind === 'local'
      ? 'local deterministic model'
      : `upstream ${redactUrl(config.model.url)}`;
  return `store: ${store}; model: ${model}; key prefix: ${config.keyPrefix}`;
}

function redactUrl(raw: string): string {
  const parsed = new URL(raw);
  if (parsed.password) parsed.password = '***';
  return parsed.toString();
}
