import { forkTsChild } from './ts-child.js';
import type { UpstreamCount, UpstreamOptions } from './upstream.js';

/** What the suite sends the upstream process. */
export type UpstreamCommand = { op: 'counts'; nonce: number } | { op: 'close' };

/** A count as it crosses the IPC channel (a Set does not). */
export type WireCount = Omit<UpstreamCount, 'keys'> & { keys: string[] };

/** The counting upstream model, run in a process of its own. */
export interface UpstreamProcess {
  /** Base URL for the app's `UPSTREAM_URL`. */
  url: string;
  /** Every count so far, per logical id. */
  readCounts(): Promise<Map<string, UpstreamCount>>;
  close(): Promise<void>;
}

/**
 * Starts the upstream model (see upstream.ts) in its own Node process: its streams are
 * never delayed by the thousands of client loops of the suite's own event loop, so the app
 * is measured, not the suite. Counts are read over IPC once a row is over.
 */
export async function startUpstreamProcess(
  options: UpstreamOptions = {},
): Promise<UpstreamProcess> {
  const upstream = await forkTsChild<{ url: string }>('./upstream-child.ts', [
    String(options.chunks ?? 4),
    String(options.chunkDelayMs ?? 50),
  ]);
  let nonce = 0;
  return {
    url: upstream.ready.url,
    readCounts: () =>
      new Promise((resolve, reject) => {
        const asked = ++nonce;
        const timer = setTimeout(() => {
          upstream.child.off('message', answer);
          reject(new Error('the upstream did not report its counts in 30 s'));
        }, 30_000);
        const answer = (message: {
          op?: string;
          nonce?: number;
          counts?: [string, WireCount][];
        }) => {
          if (message.op !== 'counts' || message.nonce !== asked) return;
          clearTimeout(timer);
          upstream.child.off('message', answer);
          resolve(
            new Map((message.counts ?? []).map(([id, c]) => [id, { ...c, keys: new Set(c.keys) }])),
          );
        };
        upstream.child.on('message', answer);
        upstream.send({ op: 'counts', nonce: asked } satisfies UpstreamCommand);
      }),
    close: () => upstream.close({ op: 'close' } satisfies UpstreamCommand),
  };
}
