import { type ChatModel, ModelError, type ModelInput, type Usage } from './model.js';
import { countTokens } from './tokens.js';

/** Options of {@link createUpstreamModel}. */
export interface UpstreamModelOptions {
  /** Base URL of an OpenAI-compatible API, e.g. `https://api.openai.com/v1`. */
  url: string;
  /** Sent as `Authorization: Bearer …` when set. */
  apiKey?: string | undefined;
  /** Limit of one upstream call, in ms. @default 120_000 */
  timeoutMs?: number;
  /** The fetch to use (tests inject one). @default globalThis.fetch */
  fetch?: typeof fetch;
}

interface ChunkJson {
  choices?: { delta?: { content?: string | null } }[];
  usage?: Partial<Usage> | null;
}

/**
 * Any OpenAI-compatible chat completions API as the model. Each execution is one streamed
 * upstream call carrying `Idempotency-Key` (derived from the client's key by the caller), so
 * an upstream that honours it never runs one logical request twice either, even if this
 * server executes it again after a lease takeover.
 */
export function createUpstreamModel(options: UpstreamModelOptions): ChatModel {
  const doFetch = options.fetch ?? globalThis.fetch;
  const timeoutMs = options.timeoutMs ?? 120_000;

  async function* generate(input: ModelInput): AsyncGenerator<string, Usage, void> {
    const headers: Record<string, string> = {
      'content-type': 'application/json',
      accept: 'text/event-stream',
    };
    if (options.apiKey) headers.authorization = `Bearer ${options.apiKey}`;
    if (input.idempotencyKey) headers['idempotency-key'] = input.idempotencyKey;
    const signals = [AbortSignal.timeout(timeoutMs)];
    if (input.signal) signals.push(input.signal);
    let response: Response;
    try {
      response = await doFetch(`${options.url}/chat/completions`, {
        method: 'POST',
        headers,
        body: JSON.stringify({
          model: input.model,
          messages: input.messages,
          stream: true,
          stream_options: { include_usage: true },
        }),
        signal: AbortSignal.any(signals),
      });
    } catch (error) {
      // Aborted by the execution (its lease was lost): that is not the upstream's failure.
      if (input.signal?.aborted) throw input.signal.reason;
      throw new ModelError('The upstream model could not be reached', 502, { cause: error });
    }
    if (!response.ok || response.body === null) {
      const detail = (await response.text().catch(() => '')).slice(0, 300);
      throw new ModelError(`The upstream model answered ${response.status}: ${detail}`, 502);
    }
    let content = '';
    let usage: Partial<Usage> | undefined;
    let done = false;
    for await (const data of abortable(sseData(response.body), input.signal)) {
      if (data === '[DONE]') {
        done = true;
        break;
      }
      let chunk: ChunkJson;
      try {
        chunk = JSON.parse(data) as ChunkJson;
      } catch (error) {
        throw new ModelError('The upstream model sent an unreadable chunk', 502, { cause: error });
      }
      if (chunk.usage) usage = chunk.usage;
      const piece = chunk.choices?.[0]?.delta?.content;
      if (piece) {
        content += piece;
        yield piece;
      }
    }
    if (!done) throw new ModelError('The upstream stream ended without [DONE]', 502);
    // An upstream that does not report usage is billed by our own count.
    const prompt =
      usage?.prompt_tokens ??
      input.messages.reduce((sum, m) => sum + countTokens(m.content) + 1, 0);
    const completion = usage?.completion_tokens ?? countTokens(content);
    return {
      prompt_tokens: prompt,
      completion_tokens: completion,
      total_tokens: prompt + completion,
    };
  }

  return { kind: 'upstream', generate };
}

/**
 * Passes `source` through; when it fails after `signal` aborted (the lease was lost), throws
 * the abort's reason instead of the transport error, so a lost lease is never reported as
 * an upstream failure.
 */
async function* abortable<T>(
  source: AsyncGenerator<T>,
  signal: AbortSignal | undefined,
): AsyncGenerator<T> {
  try {
    yield* source;
  } catch (error) {
    if (signal?.aborted) throw signal.reason;
    throw new ModelError('The upstream stream broke', 502, { cause: error });
  }
}

/**
 * The `data:` payloads of a server-sent events body, one per event. Linear in the body: each
 * decoded piece is scanned once from where the last line ended (a line of a megabyte that
 * arrives in many network chunks is not rescanned from its start for every chunk).
 */
export async function* sseData(body: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  const decoder = new TextDecoder();
  // The start of a line whose end has not arrived yet.
  let pending = '';
  let data: string[] = [];
  const lineEnded = function* (raw: string): Generator<string> {
    const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    if (line === '') {
      if (data.length > 0) yield data.join('\n');
      data = [];
    } else if (line.startsWith('data:')) {
      data.push(line.slice(line.charCodeAt(5) === 32 ? 6 : 5));
    }
  };
  const reader = body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    const text = decoder.decode(value, { stream: true });
    let start = 0;
    for (let newline = text.indexOf('\n'); newline >= 0; newline = text.indexOf('\n', start)) {
      const piece = text.slice(start, newline);
      const line = start === 0 ? pending + piece : piece;
      if (start === 0) pending = '';
      start = newline + 1;
      yield* lineEnded(line);
    }
    pending += text.slice(start);
  }
  if (data.length > 0) yield data.join('\n');
}
