import type { Cluster, Redis } from 'ioredis';
import type { CallGate } from './redis-live-streams.js';

interface Waiting {
  /** Wake when an entry newer than this id is added (the oldest cursor of the waiters). */
  id: string;
  wakers: Set<() => void>;
}

function compareIds(a: string, b: string): number {
  const [am = 0, as = 0] = a.split('-').map(Number);
  const [bm = 0, bs = 0] = b.split('-').map(Number);
  return am === bm ? as - bs : am - bm;
}

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
  private blockingId: Promise<number | undefined> | undefined;

  constructor(
    private readonly client: Redis | Cluster,
    private readonly blocking: Redis | Cluster,
    private readonly blockMs: number,
    private readonly timeoutMs: number,
    private readonly gate: CallGate,
  ) {
    // A reconnected connection has another id: ask again before the next round.
    blocking.on('ready', () => {
      this.blockingId = undefined;
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
    return this.idOfBlocking()
      .then((id) => {
        if (id === undefined) {
          this.blockingId = undefined;
          return;
        }
        return this.gate
          .run(() => this.client.client('UNBLOCK', id, 'TIMEOUT') as Promise<unknown>)
          .then(() => undefined);
      })
      .catch(() => {
        // The round ends by its own block anyway.
        this.blockingId = undefined;
      });
  }

  private async loop(): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      while (this.waiting.size > 0) {
        // Before the round: a blocked connection would answer only after its block.
        await this.idOfBlocking();
        const keys = [...this.waiting.keys()];
        const ids = keys.map((key) => (this.waiting.get(key) as Waiting).id);
        let reply: [string, unknown[]][] | null;
        this.inRound = true;
        try {
          reply = (await Promise.race([
            this.blocking.xread('COUNT', 1, 'BLOCK', this.blockMs, 'STREAMS', ...keys, ...ids),
            new Promise<never>((_, reject) =>
              setTimeout(
                () => reject(new Error('XREAD timed out')),
                this.blockMs + this.timeoutMs,
              ).unref?.(),
            ),
          ])) as [string, unknown[]][] | null;
        } catch {
          // The connection failed or a round hung: waiters time out on their own; pause a
          // little so a broken connection is not hammered.
          this.blockingId = undefined;
          await new Promise((resolve) => setTimeout(resolve, Math.min(this.blockMs, 200)));
          continue;
        } finally {
          this.inRound = false;
        }
        for (const [key] of reply ?? []) {
          const entry = this.waiting.get(String(key));
          if (!entry) continue;
          this.waiting.delete(String(key));
          for (const wake of [...entry.wakers]) wake();
        }
      }
    } finally {
      this.running = false;
    }
  }
}
