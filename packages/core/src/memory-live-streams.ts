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

/** One generation's log, shared by its readers (each holds a cursor, never a copy). */
class Generation {
  readonly entries: LiveEntry[] = [];
  bytes = 0;
  ended = false;
  readers = 0;
  readonly waiters = new Set<() => void>();

  push(entry: LiveEntry): void {
    this.entries.push(entry);
    if (entry.kind === 'chunk') this.bytes += entry.bytes.length;
    for (const wake of this.waiters) wake();
    this.waiters.clear();
  }
}

const generationId = ({ storageKey, fence }: LiveGeneration) => `${fence}\u0000${storageKey}`;

/**
 * The in-process live-stream channel: a tee of the recorder. A generation's log lives from
 * `publish` until its end, then only as long as a reader still reads it; readers keep a
 * cursor into the one log, so N readers cost N cursors, not N copies. The log holds at most
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
    input.signal.addEventListener('abort', onLost, { once: true });
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
    let cursor = 0;
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
      if (cursor >= held.entries.length && !options.signal?.aborted) {
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
      if (cursor >= held.entries.length) return { status: 'idle' };
      const entries = held.entries.slice(cursor, cursor + options.maxEntries);
      cursor += entries.length;
      return { status: 'entries', entries };
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
