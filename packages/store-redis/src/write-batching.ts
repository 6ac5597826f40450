import type { Cluster, Redis } from 'ioredis';

interface Corkable {
  cork(): void;
  uncork(): void;
  destroyed?: boolean;
}

/**
 * The most commands one socket write carries. Past it the batch leaves at once and the next
 * commands start another one, so that Redis works on the first ones while this process still
 * prepares the rest. One write for a whole tick made the two take turns: at 64 concurrent
 * replays Redis waited while the client prepared 64 scripts, then the client waited while
 * Redis ran them, which cost about 40 % of the rate on an idle two-core machine (see the
 * README's Performance section). 8 to 32 measured alike; each write still saves 15 system
 * calls on each side.
 */
export const WRITE_BATCH_MAX = 16;

/**
 * Sends the store's commands of one tick in few socket writes. Before a script call the
 * returned function corks the client's connection (every primary's, on a Cluster) until the
 * end of the current tick (`process.nextTick`) or until {@link WRITE_BATCH_MAX} commands wait,
 * so that the commands ioredis writes meanwhile leave together (one `writev`) instead of one
 * system call each; Redis then reads them in one `read` too. Nothing waits longer: the
 * connection is uncorked before the event loop moves on. Each command stays a command of its
 * own, answered, timed out and resent by ioredis exactly as before; only the packing on the
 * wire changes.
 *
 * Measured at 64 concurrent calls on loopback, the system calls were the larger part of the
 * client's CPU per call and of Redis's; see the README's Performance section. Stores on one
 * client share its batcher (another copy of this package keeps its own).
 */
export function createWriteBatcher(client: Redis | Cluster): () => void {
  // One per client: stores sharing a client cork the same sockets, and a flush at
  // WRITE_BATCH_MAX must release every cork taken on them, not one store's only.
  let batcher = batchers.get(client);
  if (batcher === undefined) {
    batcher = newWriteBatcher(client);
    batchers.set(client, batcher);
  }
  return batcher;
}

const batchers = new WeakMap<Redis | Cluster, () => void>();

function newWriteBatcher(client: Redis | Cluster): () => void {
  const corked: Corkable[] = [];
  let pending = false;
  let waiting = 0;
  const uncorkAll = () => {
    for (const stream of corked) stream.uncork();
    corked.length = 0;
  };
  const flush = () => {
    pending = false;
    uncorkAll();
  };
  const cork = (stream: Corkable | undefined) => {
    if (stream && !stream.destroyed) {
      stream.cork();
      corked.push(stream);
    }
  };
  const corkAll = () => {
    if (client.isCluster) for (const node of (client as Cluster).nodes('master')) cork(node.stream);
    else cork((client as Redis).stream);
  };
  return () => {
    if (!pending) {
      pending = true;
      waiting = 0;
      corkAll();
      process.nextTick(flush);
    } else if (waiting >= WRITE_BATCH_MAX) {
      uncorkAll();
      corkAll();
      waiting = 0;
    }
    waiting++;
  };
}
