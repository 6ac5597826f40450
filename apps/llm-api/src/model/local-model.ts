import { createHash } from 'node:crypto';
import { type ChatModel, ModelError, type ModelInput, type Usage } from './model.js';
import { countTokens } from './tokens.js';

/** Options of {@link createLocalModel}. */
export interface LocalModelOptions {
  /** Pause between streamed pieces, in ms. @default 15 */
  chunkDelayMs?: number;
}

/**
 * Directives a prompt may carry to script faults for demos and tests:
 * - `[fail:N]`: the first N executions of this exact prompt (and model) fail with a 500;
 * - `[stall:MS]`: every execution waits MS ms before its first token;
 * - `[slow:MS]`: pieces are MS ms apart instead of the default.
 */
export interface Directives {
  fail: number;
  stallMs: number;
  slowMs: number | undefined;
}

const DIRECTIVE = /\[(fail|stall|slow):(\d{1,6})\]/g;

/** Reads the fault directives of a prompt (see {@link Directives}). */
export function parseDirectives(prompt: string): Directives {
  const found: Directives = { fail: 0, stallMs: 0, slowMs: undefined };
  for (const [, name, value] of prompt.matchAll(DIRECTIVE)) {
    const n = Number(value);
    if (name === 'fail') found.fail = n;
    else if (name === 'stall') found.stallMs = n;
    else found.slowMs = n;
  }
  return found;
}

const WORDS = [
  'idempotent',
  'request',
  'retry',
  'ledger',
  'token',
  'stream',
  'replay',
  'lease',
  'fence',
  'record',
  'outcome',
  'exactly',
  'once',
  'safe',
  'network',
  'timeout',
  'client',
  'server',
  'store',
  'key',
  'answer',
  'model',
  'prompt',
  'chunk',
  'billing',
  'commit',
  'response',
  'duplicate',
  'concurrent',
  'batch',
  'recover',
  'durable',
  'the',
  'a',
  'is',
  'and',
  'of',
  'never',
  'twice',
  'always',
  'same',
  'bytes',
  'again',
  'first',
  'final',
  'wins',
];

function promptOf(input: ModelInput): string {
  return input.messages.map((m) => `${m.role}: ${m.content}`).join('\n');
}

/** The reply the local model gives to a prompt: a pure function of model and prompt. */
export function localReply(model: string, prompt: string): string {
  const seed = createHash('sha256').update(`${model}\u0000${prompt}`).digest();
  const count = 12 + ((seed[0] as number) % 20);
  const words: string[] = [];
  for (let i = 0; i < count; i++) {
    words.push(WORDS[(seed[(i + 1) % seed.length] as number) % WORDS.length] as string);
  }
  const first = words[0] as string;
  words[0] = first.charAt(0).toUpperCase() + first.slice(1);
  return `${words.join(' ')}.`;
}

/** The usage of a local reply: prompt tokens plus one per message, and the reply's tokens. */
export function localUsage(input: Pick<ModelInput, 'messages'>, reply: string): Usage {
  const prompt = input.messages.reduce((sum, m) => sum + countTokens(m.content) + 1, 0);
  const completion = countTokens(reply);
  return {
    prompt_tokens: prompt,
    completion_tokens: completion,
    total_tokens: prompt + completion,
  };
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * The built-in model: no network, the same reply and token counts for the same model and
 * prompt, streamed in pieces of one to three words with small delays. Fault directives in
 * the prompt (see {@link Directives}) make it fail or stall on purpose.
 */
export function createLocalModel(options: LocalModelOptions = {}): ChatModel {
  const chunkDelayMs = options.chunkDelayMs ?? 15;
  // Executions failed so far per (model, prompt), for `[fail:N]`.
  const failures = new Map<string, number>();

  async function* generate(input: ModelInput): AsyncGenerator<string, Usage, void> {
    const prompt = promptOf(input);
    const directives = parseDirectives(prompt);
    const id = createHash('sha256').update(`${input.model}\u0000${prompt}`).digest('hex');
    if (directives.stallMs > 0) await sleep(directives.stallMs, input.signal);
    const failed = failures.get(id) ?? 0;
    if (failed < directives.fail) {
      failures.set(id, failed + 1);
      throw new ModelError(
        `Injected model failure ${failed + 1} of ${directives.fail} for this prompt`,
        500,
      );
    }
    const reply = localReply(input.model, prompt);
    const words = reply.split(' ');
    const delay = directives.slowMs ?? chunkDelayMs;
    for (let i = 0; i < words.length; ) {
      const size = 1 + (i % 3);
      const piece = words.slice(i, i + size).join(' ');
      i += size;
      if (delay > 0) await sleep(delay, input.signal);
      yield i < words.length ? `${piece} ` : piece;
    }
    return localUsage(input, reply);
  }

  return { kind: 'local', generate };
}
