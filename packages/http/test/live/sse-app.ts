import type { IdempotencyStore } from '@idem/core';
import { type HttpIdempotencyOptions, withIdempotency } from '../../src/index.js';

/** What the SSE test app streams, per request body. */
export interface StreamPlan {
  /** Events to send. */
  events: number;
  /** Pause before each event after the first (ms). */
  intervalMs: number;
  /** Padding of each event's data (bytes), to make big streams. */
  pad?: number;
  /** Break the body after this many events (the execution fails). */
  failAfter?: number;
  /** Answer JSON after this delay instead of a stream. */
  json?: boolean;
  /** Pause this long instead (ms) in an execution that took the key over (fence > 1). */
  takeoverIntervalMs?: number;
}

/** One event of the stream: unique id, the generation (fence) and its number. */
export function sseEvent(fence: number, n: number, pad = 0): string {
  return `id: ${n}\ndata: {"gen":${fence},"n":${n},"pad":"${'x'.repeat(pad)}"}\n\n`;
}

const encoder = new TextEncoder();

/**
 * The app of the live-stream tests: `POST /stream` streams the events its body plans, each
 * naming the fence of its execution. `runs` counts executions of this process.
 */
export function sseApp(
  store: IdempotencyStore,
  options: Partial<HttpIdempotencyOptions> = {},
): { handle: (request: Request) => Promise<Response>; runs: () => number } {
  let runs = 0;
  const idempotent = withIdempotency(
    async (request, context) => {
      runs++;
      const plan = (await request.json()) as StreamPlan;
      const fence = context?.fence ?? 0;
      if (plan.json) {
        await new Promise((resolve) => setTimeout(resolve, plan.intervalMs));
        return Response.json({ fence });
      }
      const interval =
        fence > 1 && plan.takeoverIntervalMs !== undefined
          ? plan.takeoverIntervalMs
          : plan.intervalMs;
      let n = 0;
      const body = new ReadableStream<Uint8Array>({
        async pull(controller) {
          if (n > 0) await new Promise((resolve) => setTimeout(resolve, interval));
          if (plan.failAfter !== undefined && n === plan.failAfter) {
            controller.error(new Error('model broke'));
            return;
          }
          n++;
          controller.enqueue(encoder.encode(sseEvent(fence, n, plan.pad)));
          if (n === plan.events) controller.close();
        },
      });
      return new Response(body, { headers: { 'content-type': 'text/event-stream' } });
    },
    {
      scope: (request) => ({ principal: request.headers.get('x-tenant') ?? 'anonymous' }),
      store,
      onWarning: () => {},
      ...options,
    },
  );
  return {
    handle: async (request) => {
      if (new URL(request.url).pathname === '/runs') return Response.json({ runs });
      return idempotent(request);
    },
    runs: () => runs,
  };
}
