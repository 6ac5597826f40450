import type { IdempotencyContext } from '@idem/http';
import type { Ledger } from '../ledger/ledger.js';
import { type ChatMessage, type ChatModel, collect, type Usage } from '../model/model.js';
import { BadRequestError, modelName, readJsonObject, responseForError } from './errors.js';
import {
  billingTarget,
  type MeteringOptions,
  metered,
  meteringFor,
  upstreamKey,
} from './metering.js';

interface ChatRequest {
  model: string;
  messages: ChatMessage[];
  stream: boolean;
  includeUsage: boolean;
}

function textOf(content: unknown): string | undefined {
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) return undefined;
  let text = '';
  for (const part of content) {
    if (typeof part !== 'object' || part === null) return undefined;
    const { type, text: value } = part as { type?: unknown; text?: unknown };
    if (type !== 'text' || typeof value !== 'string') return undefined;
    text += value;
  }
  return text;
}

function parseChatRequest(body: Record<string, unknown>): ChatRequest {
  const { messages, stream, stream_options: streamOptions } = body;
  const model = modelName(body.model);
  if (!Array.isArray(messages) || messages.length === 0) {
    throw new BadRequestError('`messages` must be a non-empty array');
  }
  const parsed = messages.map((message, index): ChatMessage => {
    const { role, content } = (message ?? {}) as { role?: unknown; content?: unknown };
    const text = textOf(content);
    if (typeof role !== 'string' || text === undefined) {
      throw new BadRequestError(`messages[${index}] needs a string \`role\` and text \`content\``);
    }
    return { role, content: text };
  });
  if (stream !== undefined && stream !== null && typeof stream !== 'boolean') {
    throw new BadRequestError('`stream` must be a boolean');
  }
  const includeUsage =
    typeof streamOptions === 'object' &&
    streamOptions !== null &&
    (streamOptions as { include_usage?: unknown }).include_usage === true;
  return { model, messages: parsed, stream: stream === true, includeUsage };
}

const encoder = new TextEncoder();
/** An SSE comment: clients ignore it; it tells the recorder (and the client) the stream lives. */
const KEEP_ALIVE = encoder.encode(': keep-alive\n\n');

/**
 * `work`, with `ping` called every `everyMs` until it settles. A ping that fails (the stream
 * was cancelled or errored meanwhile) is dropped: `work` tells what happened.
 */
async function keptAlive<T>(work: Promise<T>, everyMs: number, ping: () => void): Promise<T> {
  const timer = setInterval(() => {
    try {
      ping();
    } catch {
      // See above.
    }
  }, everyMs);
  try {
    return await work;
  } finally {
    clearInterval(timer);
  }
}
/**
 * One event. Every event carries an id (its number in the stream), so a client cut off
 * mid-stream can resume with `Last-Event-ID` and get exactly the events after it.
 */
const event = (id: number, data: unknown) =>
  encoder.encode(`id: ${id}\ndata: ${typeof data === 'string' ? data : JSON.stringify(data)}\n\n`);

/**
 * `POST /v1/chat/completions`, OpenAI-compatible: a `chat.completion` object, or with
 * `stream: true` server-sent `chat.completion.chunk` events ending in `data: [DONE]`
 * (with a usage chunk when `stream_options.include_usage`). The model's first piece is
 * awaited before answering, so an injected failure or stall still gives a plain error
 * status rather than a broken stream.
 */
export function chatCompletionsHandler(
  model: ChatModel,
  ledger: Ledger,
  metering: MeteringOptions,
) {
  return async (
    request: Request,
    context: IdempotencyContext | undefined,
    answerLate?: () => void,
  ): Promise<Response> => {
    try {
      const chat = parseChatRequest(await readJsonObject(request));
      const target = billingTarget('chatcmpl-', context);
      const created = Math.floor(Date.now() / 1000);
      const generation = metered(
        model,
        ledger,
        {
          model: chat.model,
          messages: chat.messages,
          signal: context?.signal,
          idempotencyKey: upstreamKey(context),
        },
        target,
        meteringFor(metering, context, answerLate),
      );
      if (!chat.stream) {
        const { content, usage } = await collect(generation);
        return Response.json({
          id: target.messageId,
          object: 'chat.completion',
          created,
          model: chat.model,
          choices: [
            {
              index: 0,
              message: { role: 'assistant', content, refusal: null },
              logprobs: null,
              finish_reason: 'stop',
            },
          ],
          usage,
        });
      }
      const base = {
        id: target.messageId,
        object: 'chat.completion.chunk',
        created,
        model: chat.model,
      };
      const chunk = (delta: Record<string, unknown>, finish: string | null) => ({
        ...base,
        choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }],
      });
      const first = await generation.next();
      let ids = 0;
      const send = (controller: ReadableStreamDefaultController<Uint8Array>, data: unknown) =>
        controller.enqueue(event(++ids, data));
      const produce = async (controller: ReadableStreamDefaultController<Uint8Array>) => {
        try {
          send(controller, chunk({ role: 'assistant', content: '' }, null));
          let step = first;
          while (!step.done) {
            send(controller, chunk({ content: step.value }, null));
            // A wait of a lease or more (a model that pauses, a bill retrying through a store
            // outage) must not look like a body that stopped for good: once its client has
            // left, @idem/http stops the heartbeats of a body silent for a lease, and a retry
            // would take the key over and run the model again.
            step = await keptAlive(generation.next(), metering.keepAliveMs, () =>
              controller.enqueue(KEEP_ALIVE),
            );
          }
          const usage: Usage = step.value;
          send(controller, chunk({}, 'stop'));
          if (chat.includeUsage) send(controller, { ...base, choices: [], usage });
          send(controller, '[DONE]');
          controller.close();
        } catch (error) {
          // A broken stream is not a success: @idem/http releases the key.
          controller.error(error);
        }
      };
      // The producer runs on its own (not in `pull`): the model keeps going at its pace.
      const body = new ReadableStream<Uint8Array>({
        start(controller) {
          void produce(controller);
        },
      });
      return new Response(body, {
        status: 200,
        headers: {
          'content-type': 'text/event-stream; charset=utf-8',
          'cache-control': 'no-cache',
        },
      });
    } catch (error) {
      return responseForError(error);
    }
  };
}
