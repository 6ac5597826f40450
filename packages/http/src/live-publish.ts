import type { Execution, LivePublisher, LiveStreams } from '@idem/core';

/**
 * Response header naming the stream generation (the fence of the execution that produced
 * it) of a live stream, its attached copies and its replays. `@idem/client` sends it back
 * when it resumes a stream, and a resume of another generation is refused (412).
 */
export const GENERATION_HEADER = 'idempotent-generation';

/** Key of the generation a recorder publishes (registered: the Node entry has its own copy). @internal */
export const LIVE_GENERATION = Symbol.for('@idem/http.recorder.live-generation');

/** Key of a live recorder's capture view (registered: the Node entry has its own copy). @internal */
export const LIVE_CAPTURE = Symbol.for('@idem/http.recorder.live-capture');

/**
 * The body a recorder that publishes a live stream has captured so far (a view of its
 * capture: bytes below its length are never written again), or undefined once past the
 * outcome cap (it holds nothing any more) or when it publishes nothing. @internal
 */
export function liveCaptureOf(recorder: object): Uint8Array | undefined {
  return (recorder as { [LIVE_CAPTURE]?: () => Uint8Array | undefined })[LIVE_CAPTURE]?.();
}

/** The fence a recorder publishes its response under, when it does. @internal */
export function liveGenerationOf(recorder: object): number | undefined {
  return (recorder as { [LIVE_GENERATION]?: () => number | undefined })[LIVE_GENERATION]?.();
}

/** Live-stream settings resolved by the handler. @internal */
export interface LiveSettings {
  channel: LiveStreams;
  /** Media types (lowercase, no parameters) whose responses are published. */
  types: ReadonlySet<string>;
}

/**
 * The publishing side of a recorder: opened at `start` for a final response of a stream
 * type, fed every captured chunk, ended `ok` only once the outcome is stored. Past the
 * outcome cap the generation ends with an error at once, so its log never outgrows the cap.
 * @internal
 */
export class LiveTee {
  private publisher: LivePublisher | undefined;
  private ended = false;
  readonly fence: number;

  constructor(
    execution: Execution,
    live: LiveSettings,
    leaseMs: number,
    head: { status: number; headers: [string, string][] },
  ) {
    this.fence = execution.fence;
    this.publisher = live.channel.publish({
      storageKey: execution.storageKey,
      fence: execution.fence,
      leaseMs,
      signal: execution.signal,
    });
    this.publisher.append({ kind: 'head', status: head.status, headers: head.headers });
  }

  /**
   * Publishes the chunk at `offset` that `body` (the recorder's capture, the whole body so far,
   * never written again below its length) ends with: the channel gets views of it, no copy.
   * Undefined (the outcome cap was passed) ends the generation.
   */
  chunk(offset: number, body: Uint8Array | undefined): void {
    if (!this.publisher) return;
    if (!body) this.end(false);
    else this.publisher.append({ kind: 'chunk', offset, bytes: body.subarray(offset), body });
  }

  /** Ends the generation once: `ok` only after the outcome was stored. */
  end(ok: boolean): void {
    if (this.ended || !this.publisher) return;
    this.ended = true;
    void this.publisher.end(ok);
    this.publisher = undefined;
  }
}
