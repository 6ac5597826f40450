import { createHash } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import { type IdempotencyVariables, idempotency } from '@idem/hono';
import { REPLAYED_HEADER } from '@idem/http';
import { createOtelListener } from '@idem/otel';
import { type Context, type Handler, Hono, type MiddlewareHandler } from 'hono';
import type { Backend } from './backend.js';
import { chatCompletionsHandler } from './http/chat-completions.js';
import { deliverBuffered, deliverStreamed, recordUnsent } from './http/delivery.js';
import {
  errorResponse,
  responseForError,
  STORE_RETRY_AFTER_SECONDS,
  storeFailureResponse,
} from './http/errors.js';
import { InFlight } from './http/in-flight.js';
import { messagesHandler } from './http/messages.js';
import { MAX_BODY_BYTES, requestGuard } from './http/request-guard.js';
import { BillBacklog } from './ledger/persistent-bill.js';
import {
  DEFAULT_USAGE_LIMIT,
  type LedgerUsage,
  MAX_USAGE_LIMIT,
  summarize,
} from './ledger/usage-summary.js';
import type { ChatModel } from './model/model.js';

/** What the app is built from. */
export interface AppOptions {
  backend: Backend;
  model: ChatModel;
  /** Lease of an in-progress request, in ms. @default 30_000 */
  leaseMs?: number;
  /** Lease renewal interval, or `false` for none (tests of lease takeover). @default leaseMs / 10 (leaseMs / 3 on DynamoDB) */
  heartbeatMs?: number | false;
  /** Limit of every idempotency store call, in ms (the backend bounds its own calls). @default 2_000 */
  storeTimeoutMs?: number;
  /**
   * Longest a bill that met a store outage is retried after the model ran, in ms; the client
   * is answered after a lease meanwhile (503, then 409 until the answer is recorded).
   * @default 600_000
   */
  billRetryMs?: number;
  /**
   * Most bills retrying through a store failure at once (each holds a model's answer and a
   * lease for up to `billRetryMs`). While that many are, requests get 503 + Retry-After
   * before their model runs. @default 256
   */
  maxPendingBills?: number;
  /**
   * Report spans and metrics of every idempotent request through `@opentelemetry/api`
   * (`@idem/otel`): to the SDK the process registers, nowhere without one. @default true
   */
  otel?: boolean;
}

/** Per request: tells the delivery the answer is late (see `deliver`). */
const lateAnswers = new WeakMap<Request, () => void>();

/** The app, and the hooks the server needs for a graceful shutdown. */
export interface LlmApp {
  app: Hono<{ Variables: IdempotencyVariables }>;
  /** Requests whose outcome is not recorded yet. */
  inFlight: InFlight;
  /**
   * From now on new requests get 503 + Retry-After, and /readyz answers 503. Bills still
   * retrying through a store outage give up (503) after `answerWithinMs`, so that their
   * requests are answered before the server closes its connections. @default never
   */
  beginShutdown(answerWithinMs?: number): void;
  /**
   * Waits (up to `timeoutMs`) for final writes that core still retries in the background
   * after a store failure; resolves with how many are left. Call it before closing the store.
   */
  drain(timeoutMs: number): Promise<number>;
}

const digest = (value: string) => createHash('sha256').update(value).digest('hex').slice(0, 32);

/**
 * The principal a request acts for, from the credentials it carries, so one caller's
 * idempotency keys never meet another's: a digest of the `Authorization: Bearer` token (as
 * before), or of any other credentials (`Authorization` with another scheme, `x-api-key`,
 * which Anthropic-style clients send), all of them together when several are sent;
 * `anonymous` without any. The scheme's case and the spaces after it do not matter.
 */
function principalOf(request: Request): string {
  const auth = request.headers.get('authorization')?.trim();
  const apiKey = request.headers.get('x-api-key')?.trim();
  const bearer = auth?.match(/^Bearer\s+(.+)$/i)?.[1];
  if (bearer && !apiKey) return `key:${digest(bearer)}`;
  if (!auth && !apiKey) return 'anonymous';
  const scheme = auth?.match(/^(\S+)\s+(.*)$/);
  const credentials = scheme ? `${scheme[1]?.toLowerCase()} ${scheme[2]}` : (auth ?? '');
  return `credentials:${digest(JSON.stringify([credentials, apiKey ?? null]))}`;
}

/** Builds the Hono app: the two model endpoints behind @idem/http, usage, health. */
export function createApp(options: AppOptions): LlmApp {
  const { backend, model } = options;
  const inFlight = new InFlight();
  let shuttingDown = false;
  const common = {
    store: backend.store,
    leaseMs: options.leaseMs ?? 30_000,
    storeTimeoutMs: options.storeTimeoutMs ?? 2_000,
    maxBodyBytes: MAX_BODY_BYTES,
    // The global tracer and meter are looked up lazily: an SDK started after the app records too.
    ...(options.otel === false ? {} : { onEvent: createOtelListener() }),
    // A retry that arrives while the answer streams attaches to it (any process on Redis).
    ...(backend.liveStreams ? { liveStreams: { channel: backend.liveStreams } } : {}),
    // Redis and memory: renewed every tenth of the lease (core's default is a third), so at
    // any moment nine tenths of it are left and a store outage shorter than the lease, once
    // the store is back, still finds the lease alive; with a third, an outage starting just
    // before a renewal left only two thirds of it. DynamoDB: core's third, because every
    // renewal is a (billed) conditional write, and a tenth (or a fifth) took DynamoDB Local's
    // whole capacity on the development machine (more keys ran twice and recovery was slower
    // in the chaos suite's dynamodb rows than with a third).
    heartbeatMs:
      options.heartbeatMs === undefined
        ? Math.max(
            10,
            Math.floor((options.leaseMs ?? 30_000) / (backend.kind === 'dynamodb' ? 3 : 10)),
          )
        : options.heartbeatMs,
  };
  // The operation is the route, never the path as spelled: `/api/%6Dessages` reaches the same
  // handler, and must not make the same key a new request that runs (and bills) again.
  const scopeOf = (operation: string) => (c: Context) => ({
    principal: principalOf(c.req.raw),
    operation,
  });
  // The seed's endpoint: a key is required.
  const messagesIdem = idempotency({
    ...common,
    scope: scopeOf('POST /api/messages'),
    required: true,
  });
  // OpenAI-compatible: SDKs that send no key still work (without retry protection).
  const chatIdem = idempotency({
    ...common,
    scope: scopeOf('POST /v1/chat/completions'),
    required: false,
  });

  /**
   * Runs before (outside) the idempotency middleware and sees the response it produced,
   * recorded or replayed: sends it so that recording never depends on the client (see
   * delivery.ts).
   */
  const deliver: MiddlewareHandler = async (c, next) => {
    // The handler may find, once its operation ran, that its final writes are slow (a bill
    // retrying through a store outage): it calls `answerLate` and goes on. A JSON answer not
    // ready by then is replaced by a 503 for the client, and the real one is read (recorded)
    // in the background; a stream already flowing is cut. Either way the client retries with
    // its key and gets 409 until the answer is recorded, then the replay: never a release,
    // so never a second execution.
    let late: () => void = () => undefined;
    const lateSignal = new Promise<'late'>((resolve) => {
      late = () => resolve('late');
    });
    lateAnswers.set(c.req.raw, () => late());
    const produced = next().then(() => c.res);
    const first = await Promise.race([produced, lateSignal]);
    if (first === 'late') {
      inFlight.track(produced.then(recordUnsent, () => undefined));
      c.res = undefined;
      c.res = errorResponse(
        503,
        'not_recorded_yet',
        'The request ran; its answer is still being recorded. Retry with the same key to get it.',
        { 'retry-after': String(STORE_RETRY_AFTER_SECONDS) },
      );
      return;
    }
    const response = first;
    // A replay, or a retry attached to the stream in flight: nothing of it is recorded, so
    // nothing needs reading once its client is gone. Sent as it is: when the client leaves,
    // the server cancels its body, and an attached reader gives its slot back at once (pumped
    // to the end, a gone client's reader kept one of the stream's `maxReaders` slots until
    // the first execution ended, and real retries got 409 instead of the live stream).
    if (response.headers.get(REPLAYED_HEADER) === 'true') return;
    let delivered: Response;
    if (response.headers.get('content-type')?.startsWith('text/event-stream')) {
      const streamed = deliverStreamed(response);
      inFlight.track(streamed.done);
      late = () =>
        streamed.cut(new Error('the answer is still being recorded; retry with the same key'));
      delivered = streamed.response;
    } else {
      try {
        delivered = await deliverBuffered(response);
      } catch (error) {
        // The client went away: @idem/http cancelled its copy of the body and records the
        // outcome in the background; nobody reads this answer.
        if (c.req.raw.signal.aborted) {
          delivered = errorResponse(503, 'client_gone', 'The client went away', {
            'retry-after': '1',
          });
        } else {
          // Recording the outcome failed (the store is down, or the lease was lost). Answered
          // here whatever the error: rethrown, Hono would merge the headers of the response
          // whose body was just read into the error's answer and fail on its read body.
          delivered = responseForError(error);
        }
      }
    }
    // Unset first: assigning over a response merges the old one's headers into the new.
    c.res = undefined;
    c.res = delivered;
  };

  const app = new Hono<{ Variables: IdempotencyVariables }>();
  app.use('*', async (c, next) => {
    if (shuttingDown && c.req.path !== '/healthz' && c.req.path !== '/readyz') {
      return errorResponse(503, 'shutting_down', 'The server is shutting down; retry', {
        'retry-after': '1',
        connection: 'close',
      });
    }
    await next();
  });
  // Liveness: the process is up and serving HTTP (also while it drains). It says nothing
  // about the store, so a store outage never gets a healthy process restarted.
  app.get('/healthz', (c) =>
    c.json({
      status: shuttingDown ? 'shutting_down' : 'ok',
      store: backend.kind,
      model: model.kind,
    }),
  );
  // Readiness: may this instance take traffic? Not while it drains, nor while one bounded
  // round trip to the store fails; a load balancer takes it out until the store answers.
  app.get('/readyz', async (c) => {
    const notReady = (status: string, detail?: string) =>
      c.json({ status, store: backend.kind, ...(detail ? { detail } : {}) }, 503, {
        'retry-after': String(STORE_RETRY_AFTER_SECONDS),
        'cache-control': 'no-store',
      });
    if (shuttingDown) return notReady('shutting_down');
    try {
      await backend.ping();
    } catch (error) {
      return notReady('store_unavailable', error instanceof Error ? error.message : String(error));
    }
    if (shuttingDown) return notReady('shutting_down');
    return c.json({ status: 'ready', store: backend.kind }, 200, { 'cache-control': 'no-store' });
  });
  // Concurrent reads of the usage share one read of the ledger (per limit).
  const usageReads = new Map<number, Promise<LedgerUsage>>();
  const readUsage = (limit: number): Promise<LedgerUsage> => {
    let read = usageReads.get(limit);
    if (!read) {
      const { ledger } = backend;
      read = (
        ledger.usage
          ? ledger.usage(limit)
          : ledger.entries().then((entries) => summarize(entries, limit))
      ).finally(() => usageReads.delete(limit));
      usageReads.set(limit, read);
    }
    return read;
  };
  // The most recent bills (`?limit=`, 1,000 by default) and the totals of all of them: never
  // the whole ledger, which grows with every bill (listed whole, 500,000 bills held every
  // request of the process for seconds).
  app.get('/v1/usage', async (c) => {
    const asked = c.req.query('limit');
    const limit = asked === undefined ? DEFAULT_USAGE_LIMIT : Number(asked);
    if (!(Number.isSafeInteger(limit) && limit >= 1 && limit <= MAX_USAGE_LIMIT) || asked === '') {
      return errorResponse(
        400,
        'invalid_request_error',
        `\`limit\` must be an integer from 1 to ${MAX_USAGE_LIMIT}`,
      );
    }
    const [{ recent, totals }, stats] = await Promise.all([
      readUsage(limit),
      backend.ledger.stats(),
    ]);
    return c.json({
      object: 'list',
      data: recent.map((e) => ({
        message_id: e.messageId,
        model: e.model,
        prompt_tokens: e.promptTokens,
        completion_tokens: e.completionTokens,
        total_tokens: e.totalTokens,
        fence: e.fence,
        billed_at: new Date(e.billedAt).toISOString(),
      })),
      has_more: totals.messages > recent.length,
      totals,
      model_executions: {
        started: stats.model_started,
        completed: stats.model_completed,
        failed: stats.model_failed,
      },
    });
  });
  // A bill that meets a store outage is retried for up to a lease, so that an outage
  // shorter than the lease costs no second model run.
  const drainEnds = new AbortController();
  // Every bill retrying through an outage listens to it while it waits, and stops listening
  // when done: many at once is expected, not a leak.
  setMaxListeners(0, drainEnds.signal);
  const metering = {
    billWaitMs: common.leaseMs,
    billRetryMs: options.billRetryMs ?? 600_000,
    keepAliveMs: Math.max(10, Math.floor(common.leaseMs / 3)),
    stop: drainEnds.signal,
    backlog: new BillBacklog(options.maxPendingBills ?? 256),
  };
  const messages = messagesHandler(model, backend.ledger, metering);
  const chat = chatCompletionsHandler(model, backend.ledger, metering);
  // The guard first: bodies over the limit or nested too deep never reach the idempotency
  // layer or the handler, keyed or not (see request-guard.ts).
  const guard = requestGuard();
  // The handler's answer is set on the context by the route itself: once the delivery
  // answered the client late (see `deliver`), Hono would no longer take a returned one, and
  // the idempotency layer would record the wrong response.
  const route =
    (handler: typeof messages): Handler<{ Variables: IdempotencyVariables }> =>
    async (c) => {
      const response = await handler(c.req.raw, c.get('idempotency'), lateAnswers.get(c.req.raw));
      c.res = undefined;
      c.res = response;
      return c.res;
    };
  app.post('/api/messages', guard, deliver, messagesIdem, route(messages));
  app.post('/v1/chat/completions', guard, deliver, chatIdem, route(chat));
  app.notFound(() => errorResponse(404, 'not_found', 'No such endpoint'));
  app.onError((error) => {
    const failure = storeFailureResponse(error);
    if (failure) return failure;
    console.error('[llm-api] unhandled error', error);
    return errorResponse(500, 'server_error', 'Internal server error');
  });

  return {
    app,
    inFlight,
    drain: async (timeoutMs: number) => {
      const [a, b] = await Promise.all([messagesIdem.drain(timeoutMs), chatIdem.drain(timeoutMs)]);
      return a + b;
    },
    beginShutdown: (answerWithinMs?: number) => {
      shuttingDown = true;
      if (answerWithinMs !== undefined) {
        setTimeout(() => drainEnds.abort(), Math.max(0, answerWithinMs)).unref();
      }
    },
  };
}
