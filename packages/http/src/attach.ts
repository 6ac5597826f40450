import {
  callStore,
  type IdempotencyStore,
  isIdemError,
  type LiveEntry,
  type LiveGeneration,
  type LiveReader,
  type LiveStreams,
  type OutcomeOpenSettings,
  openStoredOutcome,
  readNotRecorded,
  type StoredOutcome,
} from '@idem/core';
import { refusesCoding } from './content-coding.js';
import { GENERATION_HEADER } from './live-publish.js';
import { mediaType } from './media-type.js';
import { prepareReplay, replayedHeaders } from './replay.js';
import { AnchorSkip, UNREADABLE_EVENT_ID } from './sse-resume.js';

/** How attached readers are bounded. @internal */
export interface AttachSettings {
  channel: LiveStreams;
  store: IdempotencyStore;
  storeTimeoutMs: number;
  /** The engine's settings: a stored outcome is opened as the engine opens it (its `outcomeCodec`). */
  outcomes: OutcomeOpenSettings;
  /** Most readers attached to one generation in this process. */
  maxReaders: number;
  /** A reader whose client has not taken a chunk for this long is cut (ms). */
  stallMs: number;
  /** Longest single wait on the channel (ms). */
  blockMs: number;
  /** How long a resume waits for the event named by `Last-Event-ID` to be published (ms). */
  anchorWaitMs: number;
}

/** What an attach attempt gives. @internal */
export type AttachAnswer =
  | { kind: 'stream'; response: Response }
  /**
   * Nothing to attach to here (not a stream, not published yet, too many readers): answer
   * 409. `gone`: the channel has no such generation, which is also what a duplicate sees when
   * the execution ended (and its log was dropped) between its begin and its attach: the
   * caller looks at the key again before answering 409.
   */
  | { kind: 'none'; gone?: boolean }
  /** The stream is compressed (`Content-Encoding`): `Last-Event-ID` cannot be honoured. */
  | { kind: 'encoded' }
  /** `Last-Event-ID` names no event of this generation: nothing can be resumed. */
  | { kind: 'unknown-event' }
  /** Its UTF-8 and Latin-1 readings both name an event published so far (see `ResumeHints`). */
  | { kind: 'ambiguous-event' };

/** Why an attached body ended with an error (the first execution did not store an outcome). */
export class LiveStreamBrokenError extends Error {
  constructor(reason: string) {
    super(`The stream this request attached to ended without an outcome: ${reason}`);
    this.name = 'LiveStreamBrokenError';
  }
}

const BATCH = 64;

/**
 * Attaches to the live stream of generation `generation`: the recorded head (plus the replay
 * marker and the generation), then every body byte published so far and the rest as it comes,
 * ending normally only after the `end` entry that follows the stored outcome. A gap or a
 * vanished generation is bridged from the stored outcome when it is this generation's;
 * anything else ends the body with an error.
 * @internal
 */
export async function attachToStream(
  generation: LiveGeneration,
  resume: {
    lastEventId: string | undefined;
    latin1EventId: string | undefined;
    /** The duplicate's `Accept-Encoding` (undefined: none sent, which takes any coding). */
    acceptEncoding?: string | undefined;
  },
  settings: AttachSettings,
  readers: Map<string, number>,
): Promise<AttachAnswer> {
  const { lastEventId, latin1EventId, acceptEncoding } = resume;
  const id = `${generation.fence}:${generation.storageKey}`;
  const count = readers.get(id) ?? 0;
  if (count >= settings.maxReaders) return { kind: 'none' };
  const reader = settings.channel.open(generation);
  readers.set(id, count + 1);
  let closed = false;
  const close = () => {
    if (closed) return;
    closed = true;
    reader.close();
    const left = (readers.get(id) ?? 1) - 1;
    if (left > 0) readers.set(id, left);
    else readers.delete(id);
  };
  try {
    const first = await reader.next({ waitMs: 0, maxEntries: BATCH });
    const head = first.status === 'entries' ? first.entries[0] : undefined;
    if (head?.kind !== 'head') {
      close();
      return first.status === 'missing' ? { kind: 'none', gone: true } : { kind: 'none' };
    }
    if (lastEventId !== undefined && encoded(head.headers)) {
      close();
      return { kind: 'encoded' };
    }
    // A duplicate that refuses the stream's coding (RFC 9110 12.5.3) is not handed bytes it
    // said it cannot read: it gets the 409 (or its bounded wait), and once the outcome is
    // stored, the replay, decoded for it.
    if (acceptEncoding !== undefined && refusesCoding(head.headers, acceptEncoding)) {
      close();
      return { kind: 'none' };
    }
    const source = new LiveSource(
      reader,
      generation,
      settings,
      first.status === 'entries' ? first.entries.slice(1) : [],
    );
    const skip =
      lastEventId !== undefined &&
      mediaType(head.headers.find(([name]) => name === 'content-type')?.[1]) === 'text/event-stream'
        ? new AnchorSkip(lastEventId)
        : undefined;
    const ready: Uint8Array[] = [];
    // No event carries an id that is not UTF-8: no wait for it to be published.
    if (skip && lastEventId === UNREADABLE_EVENT_ID) {
      close();
      return { kind: 'unknown-event' };
    }
    // An unmarked value past ASCII whose Latin-1 reading names another event (see
    // `ResumeHints.latin1EventId`): refused when that event was published too.
    const other = skip && latin1EventId !== undefined ? new AnchorSkip(latin1EventId) : undefined;
    // A step read ahead for that check (the end, an error), for the body to take first.
    let pending: SourceStep | undefined;
    if (skip) {
      // Nothing is answered before the named event is found: an unknown id gets a problem,
      // never a stream that the client would splice onto another.
      const until = performance.now() + settings.anchorWaitMs;
      while (!skip.found) {
        const next = await source.next(Math.max(1, until - performance.now()));
        if (next.kind === 'bytes') {
          other?.take(next.bytes);
          if (other?.found) break;
          const part = skip.take(next.bytes);
          if (part) ready.push(part);
          continue;
        }
        if (next.kind === 'idle' && performance.now() < until) continue;
        close();
        return { kind: next.kind === 'error' ? 'none' : 'unknown-event' };
      }
      // The other event may follow the named one in what the client saw: all that is
      // published so far is read (no wait: what the client saw was published before).
      while (other && !other.found) {
        const next = await source.next(0);
        if (next.kind !== 'bytes') {
          if (next.kind !== 'idle') pending = next;
          break;
        }
        other.take(next.bytes);
        ready.push(next.bytes);
      }
      if (other?.found) {
        close();
        return { kind: 'ambiguous-event' };
      }
    }
    const headers = new Headers(replayedHeaders(head.headers));
    headers.set(GENERATION_HEADER, String(generation.fence));
    let stallTimer: ReturnType<typeof setTimeout> | undefined;
    // A client that does not take a chunk for `stallMs` (one that never reads, too) is cut:
    // it holds nothing longer.
    const armStall = (controller: ReadableStreamDefaultController<Uint8Array>) => {
      stallTimer = setTimeout(() => {
        close();
        controller.error(new LiveStreamBrokenError('the client stopped reading'));
      }, settings.stallMs);
      stallTimer.unref?.();
    };
    const body = new ReadableStream<Uint8Array>(
      {
        start: armStall,
        async pull(controller) {
          clearTimeout(stallTimer);
          for (;;) {
            const bytes = ready.shift();
            if (bytes) {
              controller.enqueue(bytes);
              break;
            }
            const next = pending ?? (await source.next(settings.blockMs));
            pending = undefined;
            if (closed) return;
            if (next.kind === 'idle') continue;
            if (next.kind === 'end') {
              close();
              controller.close();
              return;
            }
            if (next.kind === 'error') {
              close();
              controller.error(new LiveStreamBrokenError(next.reason));
              return;
            }
            if (next.bytes.length > 0) ready.push(next.bytes);
          }
          armStall(controller);
        },
        cancel() {
          clearTimeout(stallTimer);
          close();
        },
      },
      { highWaterMark: 0 },
    );
    return { kind: 'stream', response: new Response(body, { status: head.status, headers }) };
  } catch (error) {
    close();
    throw error;
  }
}

/**
 * Whether a recorded head has a content coding other than identity: its body bytes are not
 * the events (a gzip stream cannot be cut at an event), so it is attached whole, never resumed.
 * @internal
 */
export function encoded(headers: readonly (readonly [string, string])[]): boolean {
  return headers.some(
    ([name, value]) =>
      name === 'content-encoding' &&
      value
        .split(',')
        .map((coding) => coding.trim().toLowerCase())
        .some((coding) => coding !== '' && coding !== 'identity'),
  );
}

type SourceStep =
  | { kind: 'bytes'; bytes: Uint8Array }
  | { kind: 'idle' }
  | { kind: 'end' }
  | { kind: 'error'; reason: string };

/** The body bytes of one generation, in order, from the channel or else the stored outcome. */
class LiveSource {
  /** Body bytes delivered so far. */
  private position = 0;
  private readonly queue: LiveEntry[];
  private fallback: Uint8Array | undefined;

  constructor(
    private readonly reader: LiveReader,
    private readonly generation: LiveGeneration,
    private readonly settings: AttachSettings,
    entries: LiveEntry[],
  ) {
    this.queue = entries;
  }

  async next(waitMs: number): Promise<SourceStep> {
    if (this.fallback) return this.fromFallback();
    let entry = this.queue.shift();
    if (!entry) {
      const read = await this.reader.next({ waitMs, maxEntries: BATCH });
      if (read.status === 'idle') return { kind: 'idle' };
      if (read.status === 'missing') return this.bridge('the stream is gone');
      this.queue.push(...read.entries);
      entry = this.queue.shift();
      if (!entry) return { kind: 'idle' };
    }
    if (entry.kind === 'end') {
      return entry.ok
        ? { kind: 'end' }
        : { kind: 'error', reason: 'the first execution failed or lost its lease' };
    }
    if (entry.kind !== 'chunk' || entry.offset !== this.position) {
      return this.bridge('the stream has a gap');
    }
    this.position += entry.bytes.length;
    return { kind: 'bytes', bytes: entry.bytes };
  }

  /**
   * The channel lost entries (a failed write, a trim after the end): the rest comes from the
   * stored outcome, only if it is this generation's (same fence), never another execution's.
   */
  private async bridge(reason: string): Promise<SourceStep> {
    this.queue.length = 0;
    const { store, storeTimeoutMs } = this.settings;
    let record: Awaited<ReturnType<IdempotencyStore['get']>>;
    try {
      record = await callStore('get', storeTimeoutMs, () => store.get(this.generation.storageKey));
    } catch {
      return { kind: 'error', reason: `${reason} and the store did not answer` };
    }
    if (record?.status !== 'completed' || record.fence !== this.generation.fence || !record.outcome)
      return { kind: 'error', reason };
    // Opened as the engine opens it (sealed by the outcome codec, or a plain marker): a
    // not-recorded marker is no body, and an outcome that does not open is never replayed.
    let outcome: StoredOutcome;
    let chunks: readonly Uint8Array[];
    try {
      outcome = await openStoredOutcome(
        this.settings.outcomes,
        this.generation.storageKey,
        record.outcome,
      );
      if (readNotRecorded(outcome))
        return { kind: 'error', reason: `${reason} and its outcome was not recorded` };
      chunks = prepareReplay(outcome).chunks;
    } catch (error) {
      // A bug of ours is not hidden as a broken stream.
      if (!isIdemError(error)) throw error;
      return { kind: 'error', reason: `${reason} and its stored outcome cannot be read` };
    }
    const body = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
    let at = 0;
    for (const chunk of chunks) {
      body.set(chunk, at);
      at += chunk.length;
    }
    this.fallback = body;
    return this.fromFallback();
  }

  private fromFallback(): SourceStep {
    const body = this.fallback as Uint8Array;
    if (this.position >= body.length) return { kind: 'end' };
    const bytes = body.subarray(this.position);
    this.position = body.length;
    return { kind: 'bytes', bytes };
  }
}
