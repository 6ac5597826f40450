import type { Readable } from 'node:stream';

/**
 * A copy of a request body as it came off the wire, taken while Fastify's own parser (or
 * whatever reads the Node request) reads it: the parsed value cannot tell apart bodies that
 * the fingerprint must (integers past 2^53, repeated member names).
 *
 * It only watches, from the `onRequest` hook: a listener put first on the Node request's `'data'` event, which a
 * Readable emits for every chunk it hands to a consumer, whichever way it is read (flowing,
 * `pipe`, `read()`, async iteration). `prependListener` adds it without switching the stream
 * to flowing mode (unlike `on('data')`), so a reader that starts later loses nothing, and
 * the chunks go on to the reader unchanged. Because it watches the Node request and not the
 * stream handed down the `preParsing` hooks (which all run after `onRequest`), it sees the bytes as sent (still compressed
 * under a Content-Encoding) whatever hooks decode them and in whatever order they run, as
 * Express and Hono do.
 *
 * Bounded: past `cap` bytes it drops what it copied and stops listening.
 */
export class BodyTap {
  private parts: Buffer[] = [];
  private size = 0;
  /** Past `cap`, or a chunk that is no longer bytes (someone set an encoding): nothing kept. */
  private state: 'open' | 'over' | 'unusable' = 'open';
  private readonly onData = (chunk: Buffer | string): void => {
    if (typeof chunk === 'string') {
      this.stop('unusable');
      return;
    }
    this.size += chunk.length;
    if (this.size > this.cap) {
      this.stop('over');
      return;
    }
    // Held as it is when it owns its memory (what Node's HTTP server hands out: each body
    // chunk a copy of its own); anything else (a view into a larger buffer, which someone
    // may reuse) is copied.
    this.parts.push(
      chunk.byteOffset === 0 && chunk.buffer.byteLength === chunk.length
        ? chunk
        : Buffer.from(chunk),
    );
  };

  /** Starts watching `raw`, which nobody must have read from yet (see {@link BodyTap.start}). */
  private constructor(
    private readonly raw: Readable,
    /** Most bytes kept. */
    readonly cap: number,
  ) {
    raw.prependListener('data', this.onData);
  }

  /**
   * Watches `raw` for at most `cap` bytes; undefined when the copy could not be whole (a
   * chunk was read from it already).
   */
  static start(raw: Readable, cap: number): BodyTap | undefined {
    return raw.readableDidRead ? undefined : new BodyTap(raw, cap);
  }

  /**
   * Stops watching and gives the body: its bytes when the whole of it was read while
   * watched, `'over'` past the cap, undefined when it was not read whole (a `preParsing`
   * hook gave Fastify another stream, a parser that reads later such as multipart's).
   */
  take(): Uint8Array | 'over' | undefined {
    const state = this.state;
    if (state === 'open') this.raw.removeListener('data', this.onData);
    if (state === 'over') return 'over';
    if (state === 'unusable' || !readWhole(this.raw)) return undefined;
    const { parts, size } = this;
    this.parts = [];
    return parts.length === 1 ? parts[0] : Buffer.concat(parts, size);
  }

  private stop(state: 'over' | 'unusable'): void {
    this.state = state;
    this.parts = [];
    this.raw.removeListener('data', this.onData);
  }
}

/** Whether every byte of the body has been handed to a reader (so the tap saw them all). */
function readWhole(raw: Readable & { complete?: boolean }): boolean {
  // `complete`: the message was received to its end; nothing left in the buffer means
  // every chunk was read (a parser may be done before 'end' is emitted).
  return raw.readableEnded || (raw.complete === true && raw.readableLength === 0);
}
