import type { IdempotencyDecision } from './handler.js';

/**
 * A whole response that @idem/http answers with on its own (a replay, one of its problems):
 * status, header pairs and body chunks. It becomes a Web `Response` only when someone asks
 * for one: on Node, building a `Response` (and the stream of its body) costs more than all
 * the rest of a replay, so the Node adapters write this form as it is ("read the bytes,
 * write the bytes").
 * @internal
 */
export interface PreparedResponse {
  readonly status: number;
  /** The status line's reason phrase, when not the status code's usual one. */
  readonly reason?: string | undefined;
  /** Lowercase names, each once, in the order a `Headers` iterates them (sorted). */
  readonly headers: readonly (readonly [string, string])[];
  /** The body as the chunks it is sent in; empty for no body. */
  readonly chunks: readonly Uint8Array[];
  /**
   * The recorded trailer fields (lowercase names, each once, sorted), sent after the body by
   * the Node sender; a Web `Response` cannot carry them (see {@link webResponse}).
   */
  readonly trailers?: readonly (readonly [string, string])[] | undefined;
}

// Registered, so that the two entry points (`@idem/http`, `@idem/http/node`), each bundled
// with its own copy of this module, find the same key.
const PREPARED = Symbol.for('@idem/http.prepared-response');

type RespondDecision = Extract<IdempotencyDecision, { action: 'respond' }>;

/**
 * A `respond` decision for `prepared`. Its `response` is built on first read (then the same
 * object every time); {@link preparedResponseOf} gives the prepared form. A class, not an
 * object literal with a getter: V8 builds such a literal through the runtime every time, and
 * every replay makes one.
 */
class PreparedDecision {
  readonly action = 'respond' as const;
  readonly [PREPARED]: PreparedResponse;
  private built: Response | undefined = undefined;

  constructor(
    prepared: PreparedResponse,
    readonly replayed: boolean,
  ) {
    this[PREPARED] = prepared;
  }

  get response(): Response {
    this.built ??= webResponse(this[PREPARED]);
    return this.built;
  }
}

/**
 * A `respond` decision for `prepared` (see {@link PreparedDecision}).
 * @internal
 */
export function respondWith(prepared: PreparedResponse, replayed: boolean): RespondDecision {
  return new PreparedDecision(prepared, replayed);
}

/** The prepared form of a `respond` decision made by @idem/http, undefined for any other. @internal */
export function preparedResponseOf(decision: object): PreparedResponse | undefined {
  return (decision as { [PREPARED]?: PreparedResponse })[PREPARED];
}

/**
 * `prepared` as a Web `Response`: no body, the one chunk as bytes, or a stream of the
 * chunks, one a read, in order. Its trailers are left out: a Web `Response` has none.
 * @internal
 */
export function webResponse(prepared: PreparedResponse): Response {
  const { status, chunks, reason } = prepared;
  const headers = new Headers(prepared.headers as [string, string][]);
  const init: ResponseInit =
    reason === undefined ? { status, headers } : { status, statusText: reason, headers };
  if (chunks.length === 0) return new Response(null, init);
  if (chunks.length === 1) return new Response(chunks[0] as Uint8Array<ArrayBuffer>, init);
  let index = 0;
  const stream = new ReadableStream<Uint8Array>(
    {
      pull(controller) {
        controller.enqueue(chunks[index++] as Uint8Array);
        if (index === chunks.length) controller.close();
      },
    },
    { highWaterMark: 0 },
  );
  return new Response(stream, init);
}
