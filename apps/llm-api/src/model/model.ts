/** A chat message as both endpoints accept it. */
export interface ChatMessage {
  role: string;
  content: string;
}

/** What a model is asked to do. */
export interface ModelInput {
  model: string;
  messages: readonly ChatMessage[];
  /** Aborts the generation (the request's lease was lost, or the server is shutting down hard). */
  signal?: AbortSignal;
  /** Idempotency key to forward to an upstream model, derived from the request's. */
  idempotencyKey?: string;
}

/** Token counts, as OpenAI reports them. */
export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

/**
 * A model: `generate` yields the reply's text in pieces and returns the usage. Generation
 * starts on the first `next()`; each call of `generate` is one model execution.
 */
export interface ChatModel {
  /** `local` or `upstream`, for /healthz. */
  readonly kind: 'local' | 'upstream';
  generate(input: ModelInput): AsyncGenerator<string, Usage, void>;
}

/** The model failed; `status` is what the API answers (500 for the local model's injected failures, 502 for upstream errors). */
export class ModelError extends Error {
  readonly status: number;

  constructor(message: string, status = 500, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'ModelError';
    this.status = status;
  }
}

/** Runs a generation to its end: the whole text and the usage. */
export async function collect(
  generation: AsyncGenerator<string, Usage, void>,
): Promise<{ content: string; usage: Usage }> {
  let content = '';
  for (;;) {
    const step = await generation.next();
    if (step.done) return { content, usage: step.value };
    content += step.value;
  }
}
