import {
  checkObject,
  checkStoreString,
  checkTimerMs,
  InvalidInputError,
  type LiveEntry,
  type LiveGeneration,
  type LivePublisher,
  type LivePublishInput,
  type LiveRead,
  type LiveReader,
  type LiveReadOptions,
  type LiveStreams,
  MAX_TIMER_MS,
  quotedInput,
} from '@idem/core';
import type { Cluster, Redis } from 'ioredis';
import type { RedisStore } from './redis-store.js';
import { XReadWaker } from './xread-waker.js';

/** Options of {@link createRedisLiveStreams}. */
export interface RedisLiveStreamOptions {
  /** The connection for `XADD`, `XRANGE`, `PEXPIRE` (the store's client will do). */
  client: Redis | Cluster;
  /**
   * A connection of its own for `XREAD BLOCK`: a blocked connection holds every command
   * queued behind it. The channel waits on it with bounded blocks (`blockMs`) and never
   * closes it. On a Cluster, the waker blocks with one `XREAD` per hash slot waited on, each
   * on a duplicate of this Cluster's connection to the slot's primary (at most 4 per primary,
   * closed when no reader waits).
   */
  blockingClient: Redis | Cluster;
  /**
   * The store whose executions publish here. Its Redis key of a record is part of every stream
   * key, so two stores on one Redis (other `keyPrefix`es: staging and production, two apps)
   * never read each other's streams, even for the same storage key and fence.
   */
  store: Pick<RedisStore, 'redisKey'>;
  /** Prefix of the stream keys: a well-formed string. @default 'idem:live:' */
  keyPrefix?: string;
  /** How long an ended generation stays readable before it is deleted (ms). @default 5_000 */
  endGraceMs?: number;
  /**
   * Longest single `XREAD BLOCK` (ms). With `commandTimeoutMs`, at most 2_147_483_647 (a
   * round is given up after both: a longer Node timer fires after 1 ms). @default 1_000
   */
  blockMs?: number;
  /** Time limit of every other call (ms), at most 2_147_483_647. @default 2_000 */
  commandTimeoutMs?: number;
}

type Fields = (Buffer | string)[];
type XEntry = [Buffer | string, Fields];

/** The waker of each blocking connection, shared by the channels that name it. */
const wakers = new WeakMap<object, XReadWaker>();

/** The ioredis `keyPrefix` a client adds to every key ('' without one). */
function ioredisKeyPrefix(redis: Redis | Cluster): string {
  const prefix = (redis.options as { keyPrefix?: unknown } | undefined)?.keyPrefix;
  return typeof prefix === 'string' ? prefix : '';
}

function positive(name: string, value: number | undefined, fallback: number): number {
  const resolved = value ?? fallback;
  if (!(Number.isSafeInteger(resolved) && resolved > 0))
    throw new InvalidInputError(`${name} must be a positive integer`);
  return resolved;
}

/**
 * Time-limits the channel's calls on `client`, and bounds what a silent Redis (blackholed,
 * paused) piles up: a call that timed out is still queued on the connection until Redis
 * answers, so once one has, later calls are not sent: they wait here (at most the time
 * limit) for Redis to answer the unanswered ones, and only one probe at a time goes out while
 * fewer than {@link MAX_UNANSWERED} are unanswered. When Redis answers again the unanswered
 * calls settle and the waiting calls go out, by themselves.
 * @internal
 */
export class CallGate {
  /** Calls that timed out and that Redis has not answered yet. */
  private unanswered = 0;
  private probing = false;
  private readonly waiting = new Set<() => void>();

  constructor(private readonly timeoutMs: number) {}

  run<T>(send: () => Promise<T>): Promise<T> {
    if (this.unanswered === 0 || (!this.probing && this.unanswered < MAX_UNANSWERED))
      return this.send(send, this.unanswered > 0);
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(go);
        reject(new Error('Redis is not answering'));
      }, this.timeoutMs);
      const go = () => {
        clearTimeout(timer);
        this.send(send, false).then(resolve, reject);
      };
      this.waiting.add(go);
    });
  }

  private send<T>(send: () => Promise<T>, probe: boolean): Promise<T> {
    if (probe) this.probing = true;
    let call: Promise<T>;
    try {
      call = send();
    } catch (error) {
      call = Promise.reject(error);
    }
    return new Promise<T>((resolve, reject) => {
      let timedOut = false;
      const timer = setTimeout(() => {
        timedOut = true;
        this.unanswered++;
        if (probe) this.probing = false;
        reject(new Error(`Redis call timed out after ${this.timeoutMs} ms`));
      }, this.timeoutMs);
      const settle = () => {
        clearTimeout(timer);
        if (probe && !timedOut) this.probing = false;
        if (!timedOut) return;
        this.unanswered--;
        // Redis answers again: the calls waiting go out.
        if (this.unanswered === 0) {
          const waiting = [...this.waiting];
          this.waiting.clear();
          for (const go of waiting) go();
        }
      };
      call.then(
        (value) => {
          settle();
          resolve(value);
        },
        (error: unknown) => {
          settle();
          reject(error);
        },
      );
    });
  }
}

/** Most calls left unanswered by a silent Redis before the gate stops probing. */
const MAX_UNANSWERED = 4;

/**
 * Body bytes waiting to be written as one entry: `length` bytes from `offset`, either a view of
 * the recorder's `body` (the whole capture so far, never written again below its length: no
 * copy while queued, one copy of the joined bytes when sent), or copies of the parts when a
 * chunk came without it.
 */
interface QueuedChunk {
  offset: number;
  length: number;
  body: Uint8Array | undefined;
  parts: Uint8Array[] | undefined;
}

/**
 * Largest entry that joined chunks make: entries stay small next to any `proto-max-bulk-len`
 * (1 MiB at the least) and to a reader's batch; the per-entry cost is already small there.
 */
const MAX_JOINED_BYTES = 64 * 1024;

/** What a publisher has waiting: an entry's fields, or body bytes still joining. */
type Queued = { fields: Fields; create: boolean } | { chunk: QueuedChunk };

/** `body` when it holds the bytes up to `end` (the recorder's capture), else undefined. */
const coveringBody = (body: Uint8Array | undefined, end: number) =>
  body !== undefined && body.length >= end ? body : undefined;

function newChunk(offset: number, bytes: Uint8Array, body: Uint8Array | undefined): QueuedChunk {
  const covering = coveringBody(body, offset + bytes.length);
  return {
    offset,
    length: bytes.length,
    body: covering,
    // Without the capture the caller may reuse `bytes`: copied now, as before.
    parts: covering ? undefined : [Buffer.from(bytes)],
  };
}

function joinChunk(chunk: QueuedChunk, bytes: Uint8Array, body: Uint8Array | undefined): void {
  const end = chunk.offset + chunk.length + bytes.length;
  const covering = coveringBody(body, end);
  if (chunk.body !== undefined && covering !== undefined) chunk.body = covering;
  else {
    if (chunk.body !== undefined) {
      chunk.parts = [Buffer.from(chunk.body.subarray(chunk.offset, chunk.offset + chunk.length))];
      chunk.body = undefined;
    }
    chunk.parts ??= [];
    chunk.parts.push(Buffer.from(bytes));
  }
  chunk.length += bytes.length;
}

/**
 * The entry to write for what is queued. Its bytes are a copy of the joined range, not a view
 * of the capture: ioredis keeps a command's arguments until Redis answers it, so a view would
 * hold the response's whole capture buffer for as long as Redis stays silent, after the
 * response ended (rev13fix: 20 streams held 20 x 4 MiB for 1 KiB written each).
 */
function toWrite(item: Queued): { fields: Fields; create: boolean } {
  if (!('chunk' in item)) return item;
  const { offset, length, body, parts } = item.chunk;
  const data = body
    ? Buffer.from(body.subarray(offset, offset + length))
    : Buffer.concat(parts ?? []);
  return { fields: ['k', 'c', 'o', String(offset), 'd', data], create: false };
}

function decode(fields: Fields): LiveEntry | undefined {
  const map = new Map<string, Buffer | string>();
  for (let i = 0; i + 1 < fields.length; i += 2)
    map.set(String(fields[i]), fields[i + 1] as Buffer | string);
  const kind = String(map.get('k'));
  const data = map.get('d');
  if (kind === 'c' && Buffer.isBuffer(data))
    return { kind: 'chunk', offset: Number(String(map.get('o'))), bytes: new Uint8Array(data) };
  if (kind === 'h' && data !== undefined) {
    const head = JSON.parse(String(data)) as { status: number; headers: [string, string][] };
    return { kind: 'head', status: head.status, headers: head.headers };
  }
  if (kind === 'e') return { kind: 'end', ok: String(data) === '1' };
  return undefined;
}

/**
 * The live-stream channel on Redis Streams: each generation is one stream under
 * `<keyPrefix><store's record key>:<fence>`, written with `XADD` by the process that executes and
 * read by any process (an `XRANGE` for what is there, an `XREAD BLOCK` on the blocking
 * connection to wait for more). The stream expires with the lease (`PEXPIRE`, renewed every
 * third of it while the execution holds its lease), and is deleted `endGraceMs` after its end.
 * A takeover publishes under its new fence: another key, so a reader never meets its chunks.
 * Constructing it opens no connection.
 */
export function createRedisLiveStreams(options: RedisLiveStreamOptions): LiveStreams {
  checkObject('createRedisLiveStreams', options);
  const { client } = options;
  if (!client || !options.blockingClient || typeof options.store?.redisKey !== 'function')
    throw new InvalidInputError('createRedisLiveStreams needs client, blockingClient and store');
  if (client === options.blockingClient)
    throw new InvalidInputError('blockingClient must be another connection than client');
  // The publisher's keys get `client`'s ioredis keyPrefix, the waker's XREAD the blocking
  // connection's: with two prefixes no reader could ever be woken by an entry.
  const written = ioredisKeyPrefix(client);
  const waited = ioredisKeyPrefix(options.blockingClient);
  if (written !== waited)
    throw new InvalidInputError(
      `client and blockingClient must have the same ioredis keyPrefix (${quotedInput(written)} and ${quotedInput(waited)}): the waker would wait on keys nobody writes`,
    );
  const prefix = checkStoreString('keyPrefix', options.keyPrefix ?? 'idem:live:', {
    allowEmpty: true,
  });
  const endGraceMs = positive('endGraceMs', options.endGraceMs, 5_000);
  // Both drive Node timers (a longer one fires after 1 ms), the waker's round limit their sum.
  const blockMs = checkTimerMs('blockMs', options.blockMs ?? 1_000);
  const timeoutMs = checkTimerMs('commandTimeoutMs', options.commandTimeoutMs ?? 2_000);
  if (blockMs + timeoutMs > MAX_TIMER_MS)
    throw new InvalidInputError(
      `blockMs + commandTimeoutMs must be at most ${MAX_TIMER_MS} (a round is given up after both)`,
    );
  const gate = new CallGate(timeoutMs);
  // One waker per blocking connection: two channels (two stores) given the same one each ran
  // an XREAD BLOCK loop on it, one waiting behind the other's block, so their readers were
  // woken up to `blockMs` late (rev13fix). Stream keys name their channel and store: one loop
  // waits for both (with the timings of the first channel made on that connection).
  let waker = wakers.get(options.blockingClient);
  if (waker === undefined) {
    waker = new XReadWaker(client, options.blockingClient, blockMs, timeoutMs, gate);
    wakers.set(options.blockingClient, waker);
  }
  const shared = waker;
  const { store } = options;
  const keyOf = ({ storageKey, fence }: LiveGeneration) =>
    `${prefix}${store.redisKey(storageKey)}:${fence}`;
  let readers = 0;
  let generations = 0;

  function publish(input: LivePublishInput): LivePublisher {
    const key = keyOf(input);
    const leaseMs = input.leaseMs;
    let broken = false;
    let ended = false;
    generations++;
    // Only the head creates the stream, with its TTL in the same transaction; a later entry
    // never recreates a stream that expired (NOMKSTREAM), so no stream key lives without a
    // TTL, even if this process dies right after a write.
    // One write in flight at a time, the entries appended meanwhile going together in the
    // next transaction: writes sent side by side may reach Redis in another order when a
    // Cluster redirects them (-ASK / -MOVED during a resharding), and an entry's id (`*`) is
    // its place in the stream.
    const xadd = (batch: { fields: Fields; create: boolean }[]): Promise<unknown> => {
      const [only] = batch;
      if (batch.length === 1 && only && !only.create)
        return client.xadd(key, 'NOMKSTREAM', '*', ...(only.fields as string[])).then((id) => {
          if (id === null) throw new Error('The stream expired');
        });
      const multi = client.multi();
      for (const { fields, create } of batch) {
        if (create) multi.xadd(key, '*', ...(fields as string[])).pexpire(key, leaseMs);
        else multi.xadd(key, 'NOMKSTREAM', '*', ...(fields as string[]));
      }
      return multi.exec().then((replies) => {
        if (!replies || replies.some(([error, reply]) => error || reply === null))
          throw new Error('XADD failed, or the stream expired');
      });
    };
    let queued: Queued[] = [];
    let sending: Promise<void> | undefined;
    /** Sends what is queued now (the caller's turn, so it goes out before later calls). */
    const send = (): Promise<void> => {
      const batch = queued.map(toWrite);
      queued = [];
      const sent = broken
        ? Promise.resolve()
        : gate
            .run(() => xadd(batch))
            .then(
              () => undefined,
              () => {
                // A lost entry would be a gap: the generation is given up (deleted below), and
                // its readers bridge from the stored outcome or end with an error.
                broken = true;
              },
            );
      return sent.then(() => {
        sending = queued.length > 0 ? send() : undefined;
        return sending;
      });
    };
    const write = (fields: Fields, create = false): Promise<unknown> => {
      queued.push({ fields, create });
      sending ??= send();
      return sending;
    };
    /**
     * Queues a chunk: one that continues the chunk queued last (both waiting behind a write in
     * flight) joins it, up to {@link MAX_JOINED_BYTES}, so a response written in tiny chunks
     * costs Redis about one entry per write, not one per chunk (1-byte chunks cost it about 25
     * times their bytes, one entry each).
     */
    const writeChunk = (offset: number, bytes: Uint8Array, body: Uint8Array | undefined) => {
      const last = queued[queued.length - 1];
      if (
        last !== undefined &&
        'chunk' in last &&
        last.chunk.offset + last.chunk.length === offset &&
        last.chunk.length + bytes.length <= MAX_JOINED_BYTES
      ) {
        joinChunk(last.chunk, bytes, body);
        return;
      }
      queued.push({ chunk: newChunk(offset, bytes, body) });
      sending ??= send();
    };
    const expire = (ms: number) => gate.run(() => client.pexpire(key, ms)).catch(() => {});
    const renew = setInterval(
      () => {
        if (!input.signal.aborted && !broken) void expire(leaseMs);
      },
      Math.max(1, Math.floor(leaseMs / 3)),
    );
    renew.unref?.();
    const stop = () => {
      if (ended) return;
      ended = true;
      generations--;
      clearInterval(renew);
    };
    /** Writes the end entry after the entries in flight, then keeps the stream for the grace. */
    const finish = async (ok: boolean) => {
      await sending;
      if (broken) {
        await gate.run(() => client.del(key)).catch(() => {});
        return;
      }
      await write(['k', 'e', 'd', ok ? '1' : '0']);
      await expire(endGraceMs);
    };
    // A lost lease ends the generation at once (readers of other processes would otherwise
    // wait for the stream to expire, up to a lease): a takeover publishes under a new fence.
    const lose = () => {
      if (ended) return;
      stop();
      void finish(false);
    };
    // A lease lost already: no abort event will come, the generation ends at once.
    if (input.signal.aborted) lose();
    else input.signal.addEventListener('abort', lose, { once: true });
    return {
      append(entry) {
        if (ended || broken) return;
        if (entry.kind === 'head') {
          const head = JSON.stringify({ status: entry.status, headers: entry.headers });
          void write(['k', 'h', 'd', head], true);
        } else writeChunk(entry.offset, entry.bytes, entry.body);
      },
      async end(ok) {
        if (ended) return;
        input.signal.removeEventListener('abort', lose);
        stop();
        await finish(ok);
      },
    };
  }

  function open(generation: LiveGeneration): LiveReader {
    const key = keyOf(generation);
    let cursor = '-';
    let closed = false;
    readers++;
    async function range(count: number): Promise<LiveRead> {
      const start = cursor === '-' ? '-' : `(${cursor}`;
      const [entries, exists] = await gate.run(() =>
        Promise.all([
          client.xrangeBuffer(key, start, '+', 'COUNT', count) as Promise<XEntry[]>,
          client.exists(key),
        ]),
      );
      if (entries.length === 0) return exists === 0 ? { status: 'missing' } : { status: 'idle' };
      cursor = String(entries[entries.length - 1]?.[0]);
      const decoded: LiveEntry[] = [];
      for (const [, fields] of entries) {
        const entry = decode(fields);
        if (entry) decoded.push(entry);
      }
      return { status: 'entries', entries: decoded };
    }
    async function next(read: LiveReadOptions): Promise<LiveRead> {
      if (closed) return { status: 'missing' };
      let first: LiveRead;
      try {
        first = await range(read.maxEntries);
      } catch {
        return { status: 'missing' };
      }
      if (first.status !== 'idle' || read.waitMs <= 0 || read.signal?.aborted) return first;
      await shared.wait(key, cursor === '-' ? '0-0' : cursor, read.waitMs, read.signal);
      try {
        return await range(read.maxEntries);
      } catch {
        return { status: 'missing' };
      }
    }
    return {
      next,
      close() {
        if (closed) return;
        closed = true;
        readers--;
      },
    };
  }

  return {
    reach: 'shared',
    publish,
    open,
    stats: () => ({ generations, readers, bytes: 0 }),
  };
}
