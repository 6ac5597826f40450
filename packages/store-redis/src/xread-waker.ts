import type { Cluster, Redis } from 'ioredis';
import type { CallGate } from './redis-live-streams.js';

interface Waiting {
  /** Wake when an entry newer than this id is added (the oldest cursor of the waiters). */
  id: string;
  wakers: Set<() => void>;
}

/**
 * Connections per Cluster primary at most: one blocking `XREAD` per slot waited on, up to
 * this; a primary with waiters in more slots keeps `LANES_PER_NODE - 1` of them blocking and
 * polls the others on the last connection (see {@link POLL_MS}).
 */
const LANES_PER_NODE = 4;
/**
 * How often the slots of a primary beyond its blocking connections are polled (one pipeline
 * of non-blocking `XREAD`s, one a slot) while readers wait on them: their readers are woken
 * within this (plus a round trip), not after the other slots' `blockMs`.
 */
const POLL_MS = 25;

const CRC16_TABLE = (() => {
  const table = new Uint16Array(256);
  for (let i = 0; i < 256; i++) {
    let crc = i << 8;
    for (let bit = 0; bit < 8; bit++)
      crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
    table[i] = crc;
  }
  return table;
})();

/** The Redis Cluster hash slot of `key` (CRC16 of its hash tag, or of the key, mod 16384). */
function keySlot(key: string): number {
  let bytes = Buffer.from(key);
  const open = bytes.indexOf(0x7b);
  if (open !== -1) {
    const close = bytes.indexOf(0x7d, open + 1);
    if (close > open + 1) bytes = bytes.subarray(open + 1, close);
  }
  let crc = 0;
  for (const byte of bytes)
    crc = ((crc << 8) & 0xffff) ^ (CRC16_TABLE[((crc >> 8) ^ byte) & 0xff] as number);
  return crc & 0x3fff;
}

interface Lane {
  connection: Redis;
  node: string;
  id: Promise<number | undefined> | undefined;
  blocked: boolean;
}

/** An error answered by Redis itself (the connection works), as ioredis names it. */
const isReplyError = (error: unknown): boolean =>
  error instanceof Error && error.name === 'ReplyError';

const nodeName = (redis: Redis) => `${redis.options.host}:${redis.options.port}`;

function compareIds(a: string, b: string): number {
  const [am = 0, as = 0] = a.split('-').map(Number);
  const [bm = 0, bs = 0] = b.split('-').map(Number);
  return am === bm ? as - bs : am - bm;
}

/** How often, and how long apart, an UNBLOCK that came before its round's XREAD is retried. */
const UNBLOCK_RETRIES = 40;
const UNBLOCK_RETRY_MS = 5;

/**
 * One `XREAD BLOCK` loop on the blocking connection for every reader of this process: each
 * round waits (at most `blockMs`) on all the streams that readers wait on, and wakes the
 * readers of those that grew; the readers then read the entries themselves. A reader that
 * starts waiting on a stream the round does not cover ends the round early (`CLIENT UNBLOCK`)
 * so it does not wait for the others' block.
 * @internal
 */
export class XReadWaker {
  private readonly waiting = new Map<string, Waiting>();
  private running = false;
  private inRound = false;
  /** Counts the rounds, so that an UNBLOCK retried for one round never ends the next. */
  private round = 0;
  private blockingId: Promise<number | undefined> | undefined;
  private readonly lanes = new Map<string, Lane[]>();
  /** Set when a Cluster round is to end early: its polling lanes stop too. */
  private roundEnding = false;

  constructor(
    private readonly client: Redis | Cluster,
    private readonly blocking: Redis | Cluster,
    private readonly blockMs: number,
    private readonly timeoutMs: number,
    private readonly gate: CallGate,
  ) {
    // A reconnected connection has another id: ask again before the next round. Not on the
    // first 'ready' of a connection that was not ready yet: the CLIENT ID that connected it
    // (the waker's first, with lazyConnect) is answered by that connection, and forgetting it
    // left the first round without an id to end it early with (rev13fix).
    let connected = blocking.status === 'ready';
    blocking.on('ready', () => {
      if (connected) this.blockingId = undefined;
      connected = true;
    });
  }

  /** The blocking connection's id, asked while it is not blocked (a blocked one answers late). */
  private idOfBlocking(): Promise<number | undefined> {
    this.blockingId ??= (this.blocking.client('ID') as Promise<number>).catch(() => undefined);
    return this.blockingId;
  }

  /** Resolves when `key` gets an entry after `afterId`, or after `waitMs`, or on `signal`. */
  wait(key: string, afterId: string, waitMs: number, signal?: AbortSignal): Promise<void> {
    return new Promise<void>((resolve) => {
      let entry = this.waiting.get(key);
      const added = entry === undefined;
      if (!entry) {
        entry = { id: afterId, wakers: new Set() };
        this.waiting.set(key, entry);
      } else if (compareIds(afterId, entry.id) < 0) entry.id = afterId;
      const held = entry;
      const done = () => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', done);
        held.wakers.delete(done);
        if (held.wakers.size === 0 && this.waiting.get(key) === held) this.waiting.delete(key);
        resolve();
      };
      const timer = setTimeout(done, waitMs);
      signal?.addEventListener('abort', done, { once: true });
      held.wakers.add(done);
      if (added && this.inRound) void this.unblock();
      void this.loop();
    });
  }

  private unblock(): Promise<void> {
    if (this.blocking.isCluster) return this.unblockLanes();
    const round = this.round;
    const attempt = (triesLeft: number): Promise<void> =>
      this.idOfBlocking().then((id) => {
        if (id === undefined) {
          this.blockingId = undefined;
          return;
        }
        return this.gate
          .run(() => this.client.client('UNBLOCK', id, 'TIMEOUT') as Promise<unknown>)
          .then((answer) => {
            // 0: the connection was not blocked yet. The round's XREAD and this UNBLOCK travel
            // on two connections, and Redis may read the UNBLOCK first: try again while that
            // same round lasts (bounded), or the new reader would wait out the whole block.
            if (answer === 0 && triesLeft > 0 && this.inRound && this.round === round) {
              return new Promise((resolve) => setTimeout(resolve, UNBLOCK_RETRY_MS)).then(() =>
                attempt(triesLeft - 1),
              );
            }
          });
      });
    return attempt(UNBLOCK_RETRIES).catch(() => {
      // The round ends by its own block anyway.
      this.blockingId = undefined;
    });
  }

  /** Ends the blocked XREADs of a Cluster round (through `client`'s connection to that node). */
  private async unblockLanes(): Promise<void> {
    const client = this.client as Cluster;
    this.roundEnding = true;
    if (!client.isCluster) return; // No connection to the node to unblock through: rounds end by their block.
    await Promise.all(
      [...this.lanes.values()].flat().map(async (lane) => {
        if (!lane.blocked) return;
        const id = await lane.id;
        const node = client.nodes('master').find((redis) => nodeName(redis) === lane.node);
        if (id === undefined || !node) return;
        // 0: the XREAD was sent but Redis has not read it yet (another connection): try again
        // while the lane is blocked (bounded), as for a standalone round.
        for (let tries = UNBLOCK_RETRIES; tries > 0 && lane.blocked; tries--) {
          const answer = await this.gate
            .run(() => node.client('UNBLOCK', id, 'TIMEOUT') as Promise<unknown>)
            .catch(() => undefined);
          if (answer !== 0) return;
          await new Promise((resolve) => setTimeout(resolve, UNBLOCK_RETRY_MS));
        }
      }),
    );
  }

  /**
   * The blocking client's ioredis `keyPrefix` ('' without one): ioredis adds it to the keys
   * of every command, and XREAD answers with the keys as Redis names them, prefix included.
   */
  private get keyPrefix(): string {
    const prefix = (this.blocking.options as { keyPrefix?: unknown }).keyPrefix;
    return typeof prefix === 'string' ? prefix : '';
  }

  private wake(reply: [string, unknown[]][] | null): void {
    const prefix = this.keyPrefix;
    for (const [named] of reply ?? []) {
      // Waiters are kept by the key as the channel names it, without the client's prefix
      // (before, with a prefix, none was found: readers were woken by their wait running out).
      const text = String(named);
      const key = prefix !== '' && text.startsWith(prefix) ? text.slice(prefix.length) : text;
      const entry = this.waiting.get(key);
      if (!entry) continue;
      this.waiting.delete(key);
      for (const wake of [...entry.wakers]) wake();
    }
  }

  /**
   * How long one XREAD blocks on `connection`: `blockMs`, but three quarters at most of the
   * connection's own ioredis `commandTimeout` and `socketTimeout` (as `recommendedRedisOptions`
   * sets them): a block that outlasts them is cut by ioredis, which also destroys the socket,
   * so the connection was torn down and reconnected every round while readers waited.
   */
  private blockFor(connection: Redis | Cluster): number {
    const options = connection.options as { commandTimeout?: unknown; socketTimeout?: unknown };
    let block = this.blockMs;
    for (const limit of [options?.commandTimeout, options?.socketTimeout]) {
      if (typeof limit === 'number' && limit > 0)
        block = Math.min(block, Math.max(1, Math.floor((limit * 3) / 4)));
    }
    return block;
  }

  private xread(
    connection: Redis | Cluster,
    keys: string[],
  ): Promise<[string, unknown[]][] | null> {
    const ids = keys.map((key) => this.waiting.get(key)?.id ?? '$');
    let timer: NodeJS.Timeout | undefined;
    return Promise.race([
      connection.xread('COUNT', 1, 'BLOCK', this.blockFor(connection), 'STREAMS', ...keys, ...ids),
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error('XREAD timed out')),
          this.blockMs + this.timeoutMs,
        );
        timer.unref?.();
      }),
    ]).finally(() => clearTimeout(timer)) as Promise<[string, unknown[]][] | null>;
  }

  /**
   * Connections of one node for its slot groups: created on first use, at most LANES_PER_NODE.
   * A lane whose connection has ended is replaced by a new one: ioredis builds a Cluster's
   * node connections with `retryStrategy: null`, so their duplicates never reconnect, and a
   * lane kept after its connection dropped (a blip, a proxy or primary restart, CLIENT KILL)
   * failed every later round on its node for as long as readers kept waiting there.
   */
  private lanesOf(node: string, count: number): Lane[] {
    const lanes = (this.lanes.get(node) ?? []).filter((lane) => {
      if (lane.connection.status !== 'end') return true;
      lane.connection.disconnect();
      return false;
    });
    this.lanes.set(node, lanes);
    const primary = (this.blocking as Cluster)
      .nodes('master')
      .find((redis) => nodeName(redis) === node);
    while (primary && lanes.length < Math.min(count, LANES_PER_NODE)) {
      // A Cluster's node connections carry no keyPrefix (ioredis adds the Cluster's own at its
      // level): the lane gets it, so its XREAD waits on the keys the publishers write.
      const prefix = this.keyPrefix;
      const connection = primary.duplicate(prefix === '' ? {} : { keyPrefix: prefix });
      const lane: Lane = { connection, node, id: undefined, blocked: false };
      lane.connection.on('error', () => undefined);
      // A reconnected lane has another id: asked again. Not on its first `ready`: the lane
      // connects lazily for the `CLIENT ID` its first round sends, which that connection
      // answers; forgetting it left the first round of every new lane without an id, so it
      // could not be ended early (a new reader, a failed lane) and ran its whole block (rev13fix).
      let connected = false;
      lane.connection.on('ready', () => {
        if (connected) lane.id = undefined;
        connected = true;
      });
      lanes.push(lane);
    }
    return lanes.slice(0, Math.min(count, LANES_PER_NODE));
  }

  /**
   * Takes a `-MOVED <slot> <host:port>` answer into the blocking Cluster's slot map (its own
   * commands never meet it: the lanes are plain connections) and asks it for the whole map
   * again, as ioredis does for its own commands. False for any other error (`-ASK` during a
   * migration included: the slot is still the source's, the round is retried after a pause).
   */
  private followMoved(error: unknown): boolean {
    const match = /^MOVED (\d+) (\S+)/.exec(error instanceof Error ? error.message : '');
    if (!match) return false;
    const cluster = this.blocking as Cluster & { slots: string[][] };
    cluster.slots[Number(match[1])] = [match[2] as string];
    cluster.refreshSlotsCache?.(() => undefined);
    return true;
  }

  /**
   * A Cluster round: one XREAD per hash slot (keys of several slots in one XREAD are a
   * CROSSSLOT error), each on a connection to the slot's primary; a node with waiters in more
   * slots than LANES_PER_NODE blocks on LANES_PER_NODE - 1 of them and polls the rest (one
   * pipeline every POLL_MS) on its last connection. Throws if a read failed.
   */
  private async clusterRound(keys: string[]): Promise<void> {
    const cluster = this.blocking as Cluster;
    if (cluster.status !== 'ready') throw new Error('cluster not ready');
    const slots = (cluster as unknown as { slots: string[][] }).slots;
    const bySlot = new Map<number, string[]>();
    const prefix = this.keyPrefix;
    for (const key of keys) {
      // The slot of the key as Redis names it: a prefix with a hash tag decides it.
      const slot = keySlot(prefix + key);
      bySlot.set(slot, [...(bySlot.get(slot) ?? []), key]);
    }
    const byNode = new Map<string, string[][]>();
    for (const [slot, group] of bySlot) {
      const node = slots[slot]?.[0];
      if (node === undefined) throw new Error(`slot ${slot} has no node`);
      byNode.set(node, [...(byNode.get(node) ?? []), group]);
    }
    // Lanes of a node no slot is waited on any more (the slots moved away, or their readers
    // left) are closed: the connections per primary stay bounded by the slots waited on now.
    for (const [node, lanes] of this.lanes) {
      if (byNode.has(node)) continue;
      for (const lane of lanes) lane.connection.disconnect();
      this.lanes.delete(node);
    }
    let failed = false;
    const runs: Promise<void>[] = [];
    const blockOn = async (lane: Lane, group: string[]) => {
      lane.id ??= (lane.connection.client('ID') as Promise<number>).catch(() => undefined);
      await lane.id;
      // Ended before it blocked (a reader started waiting meanwhile): the next round covers it.
      if (this.roundEnding) return;
      lane.blocked = true;
      try {
        this.wake(await this.xread(lane.connection, group));
      } catch (error) {
        // -MOVED: the slot went to another primary (Redis 7 answers a client blocked on a
        // slot it handed over, within its clientsCron pass). The next round blocks on the
        // new owner at once; the others end theirs so it starts now, not after their block.
        if (this.followMoved(error)) {
          lane.blocked = false;
          void this.unblockLanes();
          return;
        }
        // The connection failed (dropped, or the XREAD timed out on a silent one): the lane
        // is closed and the next round opens another to the node's primary, at once: the
        // round's other XREADs are ended (as for -MOVED), or its readers would wait for their
        // block (up to `blockMs`) before the lane is replaced. An answer from Redis (-ASK
        // while the slot migrates) leaves the connection as it is.
        if (isReplyError(error)) lane.id = undefined;
        else {
          this.dropLane(lane);
          void this.unblockLanes();
        }
        failed = true;
      } finally {
        lane.blocked = false;
      }
    };
    for (const [node, groups] of byNode) {
      const lanes = this.lanesOf(node, groups.length);
      if (lanes.length === 0) throw new Error(`no connection to ${node}`);
      // More slots than connections: the last one polls the slots the others do not block on.
      const blocking = groups.length <= lanes.length ? groups.length : lanes.length - 1;
      for (let g = 0; g < blocking; g++)
        runs.push(blockOn(lanes[g] as Lane, groups[g] as string[]));
      if (blocking < groups.length)
        runs.push(
          this.poll(lanes[blocking] as Lane, groups.slice(blocking)).catch((error: unknown) => {
            if (!isReplyError(error)) {
              this.dropLane(lanes[blocking] as Lane);
              void this.unblockLanes();
            }
            failed = true;
          }),
        );
    }
    await Promise.all(runs);
    if (failed) throw new Error('XREAD failed');
  }

  /**
   * Polls the streams of `groups` (one slot each, all on `lane`'s node) every POLL_MS with
   * one pipeline of non-blocking XREADs, waking the readers of those that grew, until none is
   * waited on, `blockMs` passed, or the round is ended early (a reader waits anew).
   */
  private async poll(lane: Lane, groups: string[][]): Promise<void> {
    const until = performance.now() + this.blockMs;
    for (;;) {
      // Streams whose readers were woken (or left) are no longer polled.
      const left = groups
        .map((group) => group.filter((key) => this.waiting.has(key)))
        .filter((group) => group.length > 0);
      if (left.length === 0) return;
      const pipeline = lane.connection.pipeline();
      for (const group of left)
        pipeline.xread(
          'COUNT',
          1,
          'STREAMS',
          ...group,
          ...group.map((key) => this.waiting.get(key)?.id ?? '$'),
        );
      let timer: NodeJS.Timeout | undefined;
      const results = await Promise.race([
        pipeline.exec(),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error('XREAD timed out')), this.timeoutMs);
          timer.unref?.();
        }),
      ]).finally(() => clearTimeout(timer));
      for (const [error, reply] of results ?? []) {
        if (error) throw error;
        if (reply) this.wake(reply as [string, unknown[]][]);
      }
      if (this.roundEnding || performance.now() + POLL_MS >= until) return;
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    }
  }

  /** Closes `lane` and forgets it: the next round of its node opens a fresh connection. */
  private dropLane(lane: Lane): void {
    lane.connection.disconnect();
    lane.id = undefined;
    const lanes = this.lanes.get(lane.node);
    if (lanes === undefined) return;
    const at = lanes.indexOf(lane);
    if (at !== -1) lanes.splice(at, 1);
  }

  private closeLanes(): void {
    for (const lanes of this.lanes.values()) for (const lane of lanes) lane.connection.disconnect();
    this.lanes.clear();
  }

  private async loop(): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      while (this.waiting.size > 0) {
        try {
          if (this.blocking.isCluster) {
            this.inRound = true;
            this.roundEnding = false;
            await this.clusterRound([...this.waiting.keys()]);
          } else {
            // Before the round: a blocked connection would answer only after its block.
            await this.idOfBlocking();
            // The keys are taken after that wait, with no other between them and `inRound`: a
            // reader that started waiting meanwhile (not in the round, and no UNBLOCK since no
            // round was on) was missed and woken only by its wait running out (rev13fix).
            const keys = [...this.waiting.keys()];
            this.round += 1;
            this.inRound = true;
            this.wake(await this.xread(this.blocking, keys));
          }
        } catch {
          // The connection failed or a round hung: waiters time out on their own; pause a
          // little so a broken connection is not hammered.
          this.blockingId = undefined;
          await new Promise((resolve) => setTimeout(resolve, Math.min(this.blockMs, 200)));
        } finally {
          this.inRound = false;
        }
      }
    } finally {
      this.running = false;
      // Nobody waits: a Cluster's per-node blocking connections are closed until the next wait.
      this.closeLanes();
    }
  }
}
