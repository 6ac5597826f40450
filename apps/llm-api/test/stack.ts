import { type AttemptEvent, createIdempotentFetch, type FetchFunction } from '@idem/client';
import OpenAI from 'openai';
import { parseConfig } from '../src/config.js';
import { type FaultProxy, startFaultProxy } from '../src/demo/fault-proxy.js';
import { type RunningServer, startServer } from '../src/server.js';
import { REDIS_URL, randomPrefix } from './redis.js';

/** `dynamodb` expects DYNAMODB_TABLE and DYNAMODB_ENDPOINT in the env. */
export type StoreKind = 'memory' | 'redis' | 'dynamodb';

/** What `GET /v1/usage` answers. */
export interface UsageJson {
  data: { message_id: string; total_tokens: number; fence: number }[];
  totals: { messages: number; total_tokens: number };
  model_executions: { started: number; completed: number; failed: number };
}

/** A server on a loopback port, a fault proxy in front of it, and clients through the proxy. */
export interface Stack {
  server: RunningServer;
  proxy: FaultProxy;
  prefix: string;
  /** Every attempt the idempotent fetch made. */
  attempts: AttemptEvent[];
  /** @idem/client's fetch, short timeouts for tests. */
  fetch: FetchFunction;
  /** Another idempotent fetch with these options, reporting into `attempts`. */
  fetchWith(options: Parameters<typeof createIdempotentFetch>[0]): FetchFunction;
  /** The openai SDK on that fetch, SDK retries off. */
  openai: OpenAI;
  usage(): Promise<UsageJson>;
  close(): Promise<void>;
}

/** Starts a server on `store` with a random key prefix (or `prefix`), behind a fault proxy. */
export async function startStack(
  store: StoreKind,
  env: Record<string, string> = {},
  clientOptions: Parameters<typeof createIdempotentFetch>[0] = {},
): Promise<Stack> {
  const prefix = env.IDEM_KEY_PREFIX ?? randomPrefix();
  const server = await startServer(
    parseConfig({
      PORT: '0',
      MODEL_CHUNK_DELAY_MS: '2',
      SHUTDOWN_TIMEOUT_MS: '10000',
      IDEM_KEY_PREFIX: prefix,
      ...(store === 'redis' ? { REDIS_URL } : {}),
      ...env,
    }),
  );
  const proxy = await startFaultProxy(server.url);
  const attempts: AttemptEvent[] = [];
  const fetchWith = (options: Parameters<typeof createIdempotentFetch>[0]) =>
    createIdempotentFetch({
      attemptTimeoutMs: 2_000,
      maxAttempts: 12,
      initialDelayMs: 20,
      maxDelayMs: 100,
      maxRetryAfterMs: 100,
      ...clientOptions,
      ...options,
      onAttempt: (event) => attempts.push(event),
    });
  const fetch = fetchWith({});
  const openai = new OpenAI({
    baseURL: `${proxy.url}/v1`,
    apiKey: 'sk-test',
    fetch,
    maxRetries: 0,
  });
  return {
    server,
    proxy,
    prefix,
    attempts,
    fetch,
    fetchWith,
    openai,
    usage: async () => {
      const response = await globalThis.fetch(`${server.url}/v1/usage`);
      return (await response.json()) as UsageJson;
    },
    close: async () => {
      await proxy.close();
      await server.close();
    },
  };
}

/** Posts `{ prompt, model }` to /api/messages through the proxy. */
export async function postMessage(
  stack: Stack,
  prompt: string,
  headers: Record<string, string> = {},
  fetch: FetchFunction = stack.fetch,
): Promise<{
  status: number;
  json: { id: string; content: string; usage: { total_tokens: number } };
  response: Response;
}> {
  const response = await fetch(`${stack.proxy.url}/api/messages`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify({ prompt, model: 'local-1' }),
  });
  return { status: response.status, json: await response.clone().json(), response };
}
