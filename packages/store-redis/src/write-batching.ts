import type { Cluster, Redis } from 'ioredis';

interface Corkable {
  cork(): void;
  uncork(): void;
  destroyed?: boolean;
}

/**
 * Sends the store's commands of one tick in one socket write. Before a script call the
 * returned function corks the client's connection (every primary's, on a Cluster) until the
 * end of the current tick (`process.nextTick`), so that the commands ioredis writes meanwhile
 * leave together (one `writev`) instead of one system call each; Redis then reads them in one
 * `read` too. Nothing waits longer: the connection is uncorked before the event loop moves
 * on. Each command stays a command of its own, answered, timed out and resent by ioredis
 * exactly as before; only the packing on the wire changes.
 *
 * Measured at 64 concurrent calls on loopback, the system calls were the larger part of the
 * client's CPU per call and of Redis's; see the README's Performance section.
 */
export function createWriteBatcher(client: Redis | Cluster): () => void {
  const corked: Corkable[] = [];
  let pending = false;
  const flush = () => {
    pending = false;
    for (const stream of corked) stream.uncork();
    corked.length = 0;
  };
  const cork = (stream: Corkable | undefined) => {
    if (stream && !stream.destroyed) {
      stream.cork();
      corked.push(stream);
    }
  };
  return () => {
    if (pending) return;
    pending = true;
    if (client.isCluster) for (const node of (client as Cluster).nodes('master')) cork(node.stream);
    else cork((client as Redis).stream);
    process.nextTick(flush);
  };
}
