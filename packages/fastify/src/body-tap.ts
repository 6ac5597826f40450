import type { Readable } from 'node:stream';

type Push = (chunk: unknown, encoding?: BufferEncoding) => boolean;

/** What {@link BodyTap.start} needs of the stream's state (Node's `_readableState`). */
interface ReadableState {
  ended?: boolean;
  highWaterMark?: number;
  objectMode?: boolean;
  bufferIndex?: number;
  /** An array from its `bufferIndex` on (Node 20.x, 22+), or an iterable list (older). */
  buffer?: Iterable<unknown>;
}

/**
 * A copy of a request body as it came off the wire, for the fingerprint: the parsed value
 * cannot tell apart bodies that the fingerprint must (integers past 2^53, repeated member
 * names), and Express and Hono fingerprint the bytes as sent.
 *
 * It sits where the bytes come in, not where they go out: the Node request's own `push`
 * (what Node's HTTP server, HTTP/2 compatibility layer and light-my-request call with every
 * chunk of the body, then with null at its end) is wrapped while it copies. So it adds no
 * listener and never changes how or when the stream is read (no flowing mode, no
 * data-listening flag left set behind a reader's `once('data')`); it sees each byte once,
 * whatever the readers do with them afterwards (bytes put back with `unshift()` do not go
 * through `push`; an encoding a reader sets only decodes later); and the copy is of the
 * bytes as sent (still compressed under a Content-Encoding) whichever `preParsing` hooks
 * decode them. Bytes Node pushed before the copy started (an async `onRequest` hook ran
 * before the plugin's) are taken from the stream's buffer, when nobody read from it yet.
 *
 * Bounded: past `cap` bytes it drops what it copied and stops copying (`'over'`).
 */
export class BodyTap {
  /** The copy (read by the review tests to see what a request holds). */
  private parts: Buffer[] = [];
  private size = 0;
  /** Past `cap`: nothing kept. Closed: released, or its end seen (push restored). */
  private state: 'open' | 'over' | 'released' = 'open';
  /** Node pushed the end (null): the copy is the whole body. */
  private ended: boolean;
  /**
   * Node pushed the end of a request its client abandoned (an HTTP/2 stream reset or closed
   * before END_STREAM, which Node's HTTP/2 compatibility layer ends like a whole body): the
   * copy is not the body, and the request is gone (see {@link abandoned}).
   */
  private gone = false;
  /** The request's `push` before the tap (restored when the end was seen or the tap stopped). */
  private readonly push: Push | undefined;
  /** The wrapper put in its place. */
  private readonly wrapper: Push | undefined;
  /** Told when the copy is whole, over the cap or released (while {@link BodyTap.whole} waits). */
  private onSettle: (() => void) | undefined;
  /**
   * Past the cap while someone else held the body back ({@link BodyTap.await}): the rest of
   * the body is left on the connection, unread (the request's connection must close).
   */
  leftUnread = false;

  private constructor(
    private readonly raw: Readable,
    /** Most bytes kept. */
    readonly cap: number,
    buffered: Buffer[],
    size: number,
    ended: boolean,
  ) {
    this.parts = buffered;
    this.size = size;
    this.ended = ended;
    if (ended) {
      this.push = this.wrapper = undefined;
      return;
    }
    const push = raw.push as Push;
    this.push = push;
    this.wrapper = (chunk: unknown, encoding?: BufferEncoding): boolean => {
      this.onPush(chunk, encoding);
      return push.call(raw, chunk, encoding);
    };
    raw.push = this.wrapper;
  }

  /**
   * Starts copying the body of `raw` for at most `cap` bytes: `'over'` when more than that
   * is in its buffer already, undefined when the copy could not be whole (a chunk was read
   * from it already, or its buffer holds something else than bytes).
   */
  static start(raw: Readable, cap: number): BodyTap | 'over' | undefined {
    if (raw.readableDidRead) return undefined;
    const state = (raw as unknown as { _readableState?: ReadableState })._readableState;
    if (!state || state.objectMode) return undefined;
    const buffered: Buffer[] = [];
    let size = 0;
    const length = raw.readableLength;
    if (length > 0) {
      // Pushed before the copy started, none of it read (so the buffer starts at its first
      // byte): the same bytes, whatever the layout of Node's buffer, or no copy at all.
      if (length > cap) return 'over';
      const buffer = state.buffer;
      if (!buffer) return undefined;
      const chunks = Array.isArray(buffer) ? buffer.slice(state.bufferIndex ?? 0) : [...buffer];
      for (const chunk of chunks) {
        if (!(chunk instanceof Uint8Array)) return undefined;
        buffered.push(Buffer.from(chunk));
        size += chunk.length;
      }
      if (size !== length) return undefined;
    }
    return new BodyTap(raw, cap, buffered, size, state.ended === true);
  }

  private onPush(chunk: unknown, encoding: BufferEncoding | undefined): void {
    if (this.state !== 'open') return;
    if (chunk === null) {
      if (abandoned(this.raw)) {
        this.gone = true;
        this.stop('released');
        return;
      }
      this.ended = true;
      this.restore();
      this.onSettle?.();
      return;
    }
    let bytes: Buffer;
    if (typeof chunk === 'string') bytes = Buffer.from(chunk, encoding ?? 'utf8');
    else if (chunk instanceof Uint8Array)
      // Always copied: the chunk goes on to readers (a parser, a preParsing transform) that
      // may change it in place (scrub it), and the copy must stay the bytes as sent.
      bytes = Buffer.from(chunk);
    else if (chunk === undefined) return;
    else {
      // Not bytes (the stream will refuse it): no copy can be whole.
      this.stop('released');
      return;
    }
    if (bytes.length === 0) return;
    this.size += bytes.length;
    if (this.size > this.cap) {
      this.stop('over');
      return;
    }
    this.parts.push(bytes);
  }

  /**
   * The body so far: its bytes when the whole of it came in while copying, `'over'` past the
   * cap, undefined while its end has not come (or once released). Gives the bytes once.
   */
  take(): Uint8Array | 'over' | undefined {
    if (this.state === 'over') return 'over';
    if (this.state !== 'open' || !this.ended) return undefined;
    const { parts, size } = this;
    this.stop('released');
    return parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts, size);
  }

  /**
   * Whether {@link BodyTap.take} has its final answer now, with no wait: the whole body came
   * in (or went past the cap, or the copy was stopped), its client did not abandon it.
   */
  settled(): boolean {
    return !this.gone && (this.state !== 'open' || this.ended);
  }

  /**
   * The whole body, once it is in, within `timeoutMs` (from now): {@link BodyTap.take}'s
   * answer, waiting for the rest when its end has not come yet. Never a partial copy:
   * undefined when the copy cannot be whole (released, or the stream ended without the tap
   * seeing its end).
   * - Nobody reads the request (a parser left it, or part of it, to the route, as
   *   `@fastify/multipart` does): see {@link BodyTap.pull}.
   * - Someone reads it (a `preParsing` hook's stream pipes it into one the parser hands to
   *   the route): see {@link BodyTap.await}.
   * @throws BodyTimeoutError when the rest has not come in within `timeoutMs`
   * @throws Error when the client goes away first (or went away before its body ended)
   */
  whole(timeoutMs: number): Promise<Uint8Array | 'over' | undefined> {
    const { raw } = this;
    if (this.gone) return Promise.reject(wentAway());
    if (this.settled()) return Promise.resolve(this.take());
    if (raw.readableEnded) return Promise.resolve(undefined);
    if (raw.destroyed) return Promise.reject(wentAway());
    const reading =
      raw.readableFlowing === true ||
      raw.readableEncoding !== null ||
      raw.listenerCount('data') > 0 ||
      raw.listenerCount('readable') > 0;
    return reading ? this.await(timeoutMs) : this.pull(timeoutMs);
  }

  /**
   * For a body nobody is reading: reads the rest off the request, as `@idem/express` reads a
   * body, and puts it back unread (`unshift`), then gives {@link BodyTap.take}'s answer (the
   * rest is copied as it is pushed). Past the cap, stops and discards the rest (the request
   * gets 413). Nothing is read when it times out: the request gets 408 and its connection
   * is closed.
   */
  private pull(timeoutMs: number): Promise<Uint8Array | 'over' | undefined> {
    const { raw } = this;
    return new Promise((resolve, reject) => {
      const held: Buffer[] = [];
      const settle = (failure?: Error): void => {
        clearTimeout(timer);
        raw.off('readable', onReadable);
        raw.off('error', settle);
        raw.off('close', onClose);
        const error = failure ?? (this.gone ? wentAway() : undefined);
        if (error) {
          this.stop('released');
          reject(error);
          return;
        }
        if (this.state === 'over') {
          // Answered 413: the rest is read and dropped, as Express's reader does.
          raw.resume();
          resolve('over');
          return;
        }
        // Put back in the tick of the last read: the end it scheduled finds bytes and waits.
        if (held.length > 0) raw.unshift(held.length === 1 ? held[0] : Buffer.concat(held));
        resolve(this.take());
      };
      const onReadable = (): void => {
        // Read only while bytes are buffered: a read of an empty, ended stream would end it.
        while (raw.readableLength > 0) {
          const chunk = raw.read() as Buffer | null;
          if (chunk === null) break;
          held.push(chunk);
          if (this.state === 'over') break;
        }
        if (this.state !== 'open' || (this.ended && raw.readableLength === 0)) settle();
      };
      const onClose = (): void => settle(wentAway());
      const timer = setTimeout(() => settle(new BodyTimeoutError(timeoutMs)), timeoutMs);
      raw.on('readable', onReadable);
      raw.on('error', settle);
      raw.on('close', onClose);
    });
  }

  /**
   * For a body someone else reads and holds back (a stream a `preParsing` hook pipes it
   * into, which only the route will read): waits for its end as Node pushes it, reading
   * nothing. Meanwhile the request takes in up to the cap past its `highWaterMark`, so its
   * source (the socket, the HTTP/2 stream, light-my-request's payload) is not paused by the
   * reader holding back; the reader gets every byte as before, in order, once it reads on.
   * Past the cap the copy stops (`'over'`: 413, and the connection closes, see
   * {@link BodyTap.leftUnread}) and the request's own mark is back, so the source pauses
   * again: at most `cap` bytes are held, as a parser holds them.
   */
  private await(timeoutMs: number): Promise<Uint8Array | 'over' | undefined> {
    const { raw } = this;
    const state = (raw as unknown as { _readableState?: ReadableState })._readableState;
    return new Promise((resolve, reject) => {
      const mark = state?.highWaterMark;
      const raised = Math.max(mark ?? 0, this.cap + 1);
      const settle = (failure?: Error): void => {
        clearTimeout(timer);
        this.onSettle = undefined;
        raw.off('error', settle);
        raw.off('close', onClose);
        if (state && state.highWaterMark === raised) state.highWaterMark = mark;
        const error = failure ?? (this.gone ? wentAway() : undefined);
        if (error) {
          this.stop('released');
          reject(error);
          return;
        }
        if (this.state === 'over') this.leftUnread = true;
        resolve(this.take());
      };
      const onClose = (): void => settle(wentAway());
      const timer = setTimeout(() => settle(new BodyTimeoutError(timeoutMs)), timeoutMs);
      this.onSettle = () => settle();
      raw.on('error', settle);
      raw.on('close', onClose);
      if (state && typeof mark === 'number') {
        state.highWaterMark = raised;
        // Asks the source for more now (a read of nothing: no byte is taken from readers).
        raw.read(0);
      }
    });
  }

  /** Stops copying and drops the copy (nothing to do when done already). */
  release(): void {
    if (this.state === 'open') this.stop('released');
    else this.parts = [];
  }

  private stop(state: 'over' | 'released'): void {
    this.state = state;
    this.parts = [];
    this.restore();
    this.onSettle?.();
  }

  private restore(): void {
    // Restored as an own property (not deleted, which would slow the request's other
    // properties down); left alone when someone wrapped it after the tap.
    if (this.wrapper !== undefined && this.raw.push === this.wrapper)
      this.raw.push = this.push as Push;
  }
}

/**
 * The rest of a request body did not come in within the time the plugin waits for it at
 * `preHandler` (`bodyTimeoutMs`): the request is answered 408 and its connection closed.
 */
export class BodyTimeoutError extends Error {
  override readonly name = 'BodyTimeoutError';
  constructor(readonly timeoutMs: number) {
    super(`The request body did not come in within ${timeoutMs} ms`);
  }
}

/**
 * Whether the request's client abandoned it: Node's HTTP/2 compatibility layer (Node 20 to
 * 24) ends the request with the same `push(null)` as a whole body when its stream is reset
 * (RST_STREAM) or closed before END_STREAM, having set `aborted` (its stream's 'aborted'
 * event) first; the stream itself says so too (`aborted`, or an error code). Node's HTTP/1
 * server never ends an aborted request (it destroys it), nor does light-my-request.
 */
function abandoned(raw: Readable): boolean {
  const request = raw as { aborted?: unknown; stream?: unknown };
  if (request.aborted === true) return true;
  const stream = request.stream as { aborted?: unknown; rstCode?: unknown } | null | undefined;
  if (typeof stream !== 'object' || stream === null) return false;
  return stream.aborted === true || (typeof stream.rstCode === 'number' && stream.rstCode !== 0);
}

function wentAway(): Error {
  return new Error('The client went away before the request body was read');
}
