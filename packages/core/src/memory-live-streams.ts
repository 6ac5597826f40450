import type {
  LiveEntry,
  LiveGeneration,
  LivePublisher,
  LivePublishInput,
  LiveRead,
  LiveReader,
  LiveReadOptions,
  LiveStreamStats,
  LiveStreams,
} from './live-streams.js';

/**
 * One generation's log, shared by its readers (each holds a position, never a copy): the head,
 * the body bytes in one growing buffer (so a body written in tiny chunks costs its bytes, not
 * an object per chunk), and the end. Readers get the bytes in pieces of their own (the body is
 * byte-identical, its chunk boundaries are not kept). A chunk that brings the whole body so
 * far (`body`: the recorder's capture) is not copied: the log refers to that body instead.
 */
class Generation {
  head: Extract<LiveEntry, { kind: 'head' }> | undefined;
  private body: Uint8Array = new Uint8Array(0);
  /** Body bytes appended. */
  bytes = 0;
  /** A chunk whose offset is not the body's length (a gap): kept as is, for readers to see. */
  gap: Extract<LiveEntry, { kind: 'chunk' }> | undefined;
  end: Extract<LiveEntry, { kind: 'end' }> | undefined;
  ended = false;
  readers = 0;
  readonly waiters = new Set<() => void>();

  push(entry: LiveEntry): void {
    if (entry.kind === 'head') this.head ??= entry;
    else if (entry.kind === 'end') this.end = entry;
    else if (entry.offset !== this.bytes || this.gap) this.gap ??= entry;
    else if (entry.body && entry.body.length === this.bytes + entry.bytes.length) {
      // The publisher's own body, never written again below its length: no copy. A later
      // chunk without one is copied into a new buffer (this one has no room past its length).
      this.body = entry.body;
      this.bytes = entry.body.length;
    } else {
      const needed = this.bytes + entry.bytes.length;
      if (needed > this.body.length) {
        const grown = new Uint8Array(Math.max(needed, this.body.length * 2, 256));
        grown.set(this.body.subarray(0, this.bytes));
        this.body = grown;
      }
      this.body.set(entry.bytes, this.bytes);
      this.bytes = needed;
    }
    for (const wake of this.waiters) wake();
    this.waiters.clear();
  }

  /** Whether a reader at `position` has something to read. */
  hasAfter(position: Position): boolean {
    return (
      (!position.head && this.head !== undefined) ||
      position.at < this.bytes ||
      (this.gap !== undefined && !position.gap) ||
      (this.end !== undefined && !position.end)
    );
  }

  /** What a reader at `position` reads next (at most `max` entries); moves the position. */
  read(position: Position, max: number): LiveEntry[] {
    const out: LiveEntry[] = [];
    if (!position.head && this.head) {
      position.head = true;
      out.push(this.head);
    }
    if (out.length < max && position.at < this.bytes) {
      // A view, no copy: bytes below `this.bytes` are never written again (a grown buffer is
      // a new one).
      const bytes = this.body.subarray(position.at, this.bytes);
      out.push({ kind: 'chunk', offset: position.at, bytes });
      position.at = this.bytes;
    }
    if (out.length < max && this.gap && !position.gap) {
      position.gap = true;
      out.push(this.gap);
    }
    if (out.length < max && this.end && !position.end && position.at >= this.bytes) {
      position.end = true;
      out.push(this.end);
    }
    return out;
  }
}

interface Position {
  head: boolean;
  at: number;
  gap: boolean;
  end: boolean;
}

const generationId = ({ storageKey, fence }: LiveGeneration) => `${fence}\u0000${storageKey}`;

/**
 * The in-process live-stream channel: a tee of the recorder. A generation's log lives from
 * `publish` until its end, then only as long as a reader still reads it; readers keep a
 * position in the one log, so N readers cost N positions, not N copies. The log holds at most
 * what the recorder captures (the outcome cap: `@idem/http` ends a generation that passes it).
 */
export function createMemoryLiveStreams(): LiveStreams {
  const published = new Map<string, Generation>();
  const live = new Set<Generation>();
  let readers = 0;

  const forget = (generation: Generation) => {
    if (generation.ended && generation.readers === 0) live.delete(generation);
  };

  function publish(input: LivePublishInput): LivePublisher {
    const id = generationId(input);
    const generation = new Generation();
    // A redelivered acquisition republishes under the same fence: the newer log wins.
    const previous = published.get(id);
    if (previous && !previous.ended) finish(previous, false);
    published.set(id, generation);
    live.add(generation);

    function finish(target: Generation, ok: boolean): void {
      if (target.ended) return;
      target.push({ kind: 'end', ok });
      target.ended = true;
      if (published.get(id) === target) published.delete(id);
      forget(target);
    }
    const onLost = () => finish(generation, false);
    // A lease lost already: the generation ends at once (no abort event will come to end it).
    if (input.signal.aborted) finish(generation, false);
    else input.signal.addEventListener('abort', onLost, { once: true });
    return {
      append(entry) {
        if (!generation.ended) generation.push(entry);
      },
      end(ok) {
        input.signal.removeEventListener('abort', onLost);
        finish(generation, ok);
        return Promise.resolve();
      },
    };
  }

  function open(key: LiveGeneration): LiveReader {
    let generation = published.get(generationId(key));
    const position: Position = { head: false, at: 0, gap: false, end: false };
    if (generation) {
      generation.readers++;
      readers++;
    }
    const close = () => {
      if (!generation) return;
      const held = generation;
      generation = undefined;
      held.readers--;
      readers--;
      forget(held);
    };
    async function next(options: LiveReadOptions): Promise<LiveRead> {
      const held = generation;
      if (!held) return { status: 'missing' };
      if (!held.hasAfter(position) && !options.signal?.aborted) {
        await new Promise<void>((resolve) => {
          const done = () => {
            clearTimeout(timer);
            held.waiters.delete(done);
            options.signal?.removeEventListener('abort', done);
            resolve();
          };
          const timer = setTimeout(done, options.waitMs);
          held.waiters.add(done);
          options.signal?.addEventListener('abort', done, { once: true });
        });
      }
      if (!held.hasAfter(position)) return { status: 'idle' };
      return { status: 'entries', entries: held.read(position, options.maxEntries) };
    }
    return { next, close };
  }

  function stats(): LiveStreamStats {
    let bytes = 0;
    for (const generation of live) bytes += generation.bytes;
    return { generations: live.size, readers, bytes };
  }

  return { reach: 'process', publish, open, stats };
}
