/**
 * The live-stream channel: while an execution streams its response, its chunks are published
 * under the storage key and the fence (one **generation**), so a duplicate request can attach
 * to the stream in flight instead of waiting for the outcome. A generation is identified by
 * both: a takeover (a new fence) starts a new one, and a reader of one generation never
 * receives an entry of another.
 *
 * Core ships the in-process channel ({@link createMemoryLiveStreams}); a shared channel
 * (Redis Streams, in `@idem/store-redis`) lets a duplicate on another process attach too.
 */

/** One entry of a generation, in the order the publisher appended it. */
export type LiveEntry =
  /** The response head: status and the recorded headers (lowercase names, sorted). */
  | { kind: 'head'; status: number; headers: [string, string][] }
  /**
   * Body bytes; `offset` is the number of body bytes before them (a gap is detectable).
   * `body`, when given, is the whole body so far (`offset + bytes.length` bytes, `bytes` its
   * end) in memory that is never written again: an in-process channel keeps a reference to it
   * instead of a copy of its own (`@idem/http` passes the recorder's capture, so a live stream
   * costs its body once). A channel that ignores it copies `bytes`.
   */
  | { kind: 'chunk'; offset: number; bytes: Uint8Array; body?: Uint8Array }
  /**
   * The last entry. `ok: true` only once the outcome is stored (a reader may end its body
   * normally then); `ok: false` when the execution failed, was released, lost its lease, or
   * its response went over the outcome cap (a reader ends its body with an error).
   */
  | { kind: 'end'; ok: boolean };

/** Identifies one generation: a storage key and the fence of the execution that streams. */
export interface LiveGeneration {
  storageKey: string;
  fence: number;
}

/** What a publisher needs to know about its execution. */
export interface LivePublishInput extends LiveGeneration {
  /** How long the generation lives without a sign of life from its publisher (the lease), in ms. */
  leaseMs: number;
  /** The execution's lease signal: once it aborts, the publisher stops keeping the generation alive. */
  signal: AbortSignal;
}

/**
 * The writing side of one generation. `append` never throws and keeps the order of its
 * calls; a write that fails breaks the generation for its readers (they see a gap or the
 * generation vanish, and end with an error), never a reordering.
 */
export interface LivePublisher {
  append(entry: Exclude<LiveEntry, { kind: 'end' }>): void;
  /**
   * Appends the `end` entry and stops; a shared channel then trims the generation after a
   * short grace (readers in flight still read the end). Never rejects.
   */
  end(ok: boolean): Promise<void>;
}

/** One answer of {@link LiveReader.next}. */
export type LiveRead =
  /** Entries after the previous answer, in order (at most `maxEntries`). */
  | { status: 'entries'; entries: LiveEntry[] }
  /** Nothing new within `waitMs`; the generation still exists. */
  | { status: 'idle' }
  /**
   * The generation does not exist (never published here, trimmed after its end, expired with
   * its lease, or the channel failed): the reader can look at the stored record instead.
   */
  | { status: 'missing' };

/** Options of {@link LiveReader.next}. */
export interface LiveReadOptions {
  /** Longest wait for a new entry, in ms (bounded: a shared channel blocks at most this long). */
  waitMs: number;
  /** Most entries in one answer. */
  maxEntries: number;
  /** Stops the wait at once (the reader left); `next` then resolves `idle`. */
  signal?: AbortSignal;
}

/** The reading side of one generation, from its first entry on. */
export interface LiveReader {
  next(options: LiveReadOptions): Promise<LiveRead>;
  /** Frees what the reader holds. Idempotent. */
  close(): void;
}

/** A live-stream channel. */
export interface LiveStreams {
  /** `process`: readers in this process only; `shared`: readers in any process using the same service. */
  readonly reach: 'process' | 'shared';
  /** Starts publishing a generation. */
  publish(input: LivePublishInput): LivePublisher;
  /** Reads a generation from its first entry; a generation that does not exist reads `missing`. */
  open(generation: LiveGeneration): LiveReader;
  /** What the channel holds in this process, for monitoring and tests. */
  stats(): LiveStreamStats;
}

/** What a channel holds in this process. */
export interface LiveStreamStats {
  /** Generations published here and not ended (or ended and still held by a reader). */
  generations: number;
  /** Readers open. */
  readers: number;
  /** Body bytes held in this process's memory for generations (0 for a shared channel). */
  bytes: number;
}
