import {
  type AttemptEvent,
  createIdempotentFetch,
  type FetchFunction,
  getIdempotencyInfo,
} from '@idem/client';
import OpenAI from 'openai';

/** One logical request as the demo made it, to re-send it later with the same key. */
export interface LogicalRequest {
  scenario: string;
  key: string;
  path: string;
  body: unknown;
  auth: string | undefined;
  /** What the client got: message id and total tokens. */
  messageId: string;
  tokens: number;
}

/** What the server says about itself at `GET /v1/usage`. */
export interface ServerCounters {
  completed: number;
  failed: number;
  billedMessages: number;
  billedTokens: number;
  messageIds: string[];
}

/** Client-side counters. */
export interface ClientCounters {
  logical: number;
  attempts: number;
  replays: number;
}

export const API_KEY = 'sk-demo-llm-api';

/** The demo's client side: an idempotent fetch, the openai SDK on it, and counters. */
export class Harness {
  readonly client: ClientCounters = { logical: 0, attempts: 0, replays: 0 };
  readonly requests: LogicalRequest[] = [];
  readonly fetch: FetchFunction;
  readonly openai: OpenAI;

  constructor(
    /** Where clients send requests (the fault proxy). */
    public proxyUrl: string,
    /** Where the demo reads the server's counters (directly, not through the proxy). */
    public serverUrl: string,
  ) {
    this.fetch = this.idempotentFetch({});
    this.openai = new OpenAI({
      baseURL: `${proxyUrl}/v1`,
      apiKey: API_KEY,
      fetch: this.fetch,
      // Retries are @idem/client's job: one key for every attempt of a logical call.
      maxRetries: 0,
    });
  }

  /** An idempotent fetch that counts attempts and replays into this harness. */
  idempotentFetch(overrides: Parameters<typeof createIdempotentFetch>[0]): FetchFunction {
    return createIdempotentFetch({
      attemptTimeoutMs: 1_000,
      maxAttempts: 10,
      initialDelayMs: 50,
      maxDelayMs: 300,
      maxRetryAfterMs: 300,
      ...overrides,
      onAttempt: (event: AttemptEvent) => {
        this.client.attempts += 1;
        if (event.replayed) this.client.replays += 1;
      },
    });
  }

  /** Notes a logical request that completed. */
  record(request: Omit<LogicalRequest, 'scenario'>, scenario: string): void {
    this.client.logical += 1;
    this.requests.push({ ...request, scenario });
  }

  /** POST /api/messages through the proxy; returns what the client got. */
  async postMessage(
    prompt: string,
    options: { key?: string; fault?: string; fetch?: FetchFunction } = {},
  ): Promise<{ key: string; id: string; tokens: number; replayed: boolean }> {
    const headers: Record<string, string> = { 'content-type': 'application/json' };
    if (options.key) headers['idempotency-key'] = options.key;
    if (options.fault) headers['x-demo-fault'] = options.fault;
    const body = { prompt, model: 'local-1' };
    const response = await (options.fetch ?? this.fetch)(`${this.proxyUrl}/api/messages`, {
      method: 'POST',
      headers,
      body: JSON.stringify(body),
    });
    const json = (await response.json()) as { id: string; usage: { total_tokens: number } };
    if (response.status !== 201) {
      throw new Error(`POST /api/messages answered ${response.status}: ${JSON.stringify(json)}`);
    }
    const info = getIdempotencyInfo(response);
    if (!info?.key) throw new Error('The idempotent fetch reported no key');
    return { key: info.key, id: json.id, tokens: json.usage.total_tokens, replayed: info.replayed };
  }

  /** The body of a chat completion request, as the SDK sends it. */
  static chatBody(prompt: string) {
    return { model: 'local-1', messages: [{ role: 'user' as const, content: prompt }] };
  }

  /** The body of a streamed chat completion request, usage included. */
  static streamBody(prompt: string) {
    return {
      ...Harness.chatBody(prompt),
      stream: true as const,
      stream_options: { include_usage: true },
    };
  }

  get auth(): string {
    return `Bearer ${API_KEY}`;
  }

  /** The server's counters and ledger totals. */
  async server(): Promise<ServerCounters> {
    const response = await fetch(`${this.serverUrl}/v1/usage`);
    if (!response.ok) throw new Error(`GET /v1/usage answered ${response.status}`);
    const usage = (await response.json()) as {
      data: { message_id: string }[];
      totals: { messages: number; total_tokens: number };
      model_executions: { completed: number; failed: number };
    };
    return {
      completed: usage.model_executions.completed,
      failed: usage.model_executions.failed,
      billedMessages: usage.totals.messages,
      billedTokens: usage.totals.total_tokens,
      messageIds: usage.data.map((d) => d.message_id),
    };
  }
}
