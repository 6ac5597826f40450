/**
 * Steps the live-stream waker tests (rev13 / rev13fix) take with their publishers and readers.
 */
import type { LivePublisher, LiveRead, LiveReader, LiveStreams } from '@idem/core';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Reads `reader` (no wait) until its entries are there: up to 50 more reads 20 ms apart,
 * for the publisher's first append to land. The last read: the caller expects 'entries'.
 */
export async function primeReader(reader: LiveReader): Promise<LiveRead> {
  let read = await reader.next({ waitMs: 0, maxEntries: 10 });
  for (let i = 0; i < 50 && read.status !== 'entries'; i++) {
    await sleep(20);
    read = await reader.next({ waitMs: 0, maxEntries: 10 });
  }
  return read;
}

/** Two generations published with a head each, and a reader of each. */
export interface ReaderPair {
  pubA: LivePublisher;
  pubB: LivePublisher;
  readerA: LiveReader;
  readerB: LiveReader;
}

type Generation = { storageKey: string; fence: number };

/**
 * Publishes generation `a` on `liveA` and `b` on `liveB` (10 s leases, a head of status
 * `headStatuses[0]` / `[1]` each), waits 100 ms, and opens a reader of each.
 */
export async function openReaderPair(
  [liveA, a]: [LiveStreams, Generation],
  [liveB, b]: [LiveStreams, Generation],
  signal: AbortSignal,
  headStatuses: [number, number] = [200, 200],
): Promise<ReaderPair> {
  const pubA = liveA.publish({ ...a, leaseMs: 10_000, signal });
  const pubB = liveB.publish({ ...b, leaseMs: 10_000, signal });
  pubA.append({ kind: 'head', status: headStatuses[0], headers: [] });
  pubB.append({ kind: 'head', status: headStatuses[1], headers: [] });
  await sleep(100);
  return { pubA, pubB, readerA: liveA.open(a), readerB: liveB.open(b) };
}

/**
 * Reads each reader once (no wait: its head), then four rounds: both readers start waiting
 * (4 s) in the same tick, then after 200 ms one entry
 * is appended for each in turn (B first in even rounds, A first in odd ones) and its wake
 * awaited; then closes both readers. The wake-ups, `<A|B>:<ms from the append>`, in order.
 */
export async function wakeInTurns({ pubA, pubB, readerA, readerB }: ReaderPair): Promise<string[]> {
  await readerA.next({ waitMs: 0, maxEntries: 10 });
  await readerB.next({ waitMs: 0, maxEntries: 10 });
  const waits: string[] = [];
  for (let i = 0; i < 4; i++) {
    const waitingA = readerA.next({ waitMs: 4_000, maxEntries: 10 });
    const waitingB = readerB.next({ waitMs: 4_000, maxEntries: 10 });
    await sleep(200);
    const order: [string, LivePublisher, Promise<unknown>][] =
      i % 2 === 0
        ? [
            ['B', pubB, waitingB],
            ['A', pubA, waitingA],
          ]
        : [
            ['A', pubA, waitingA],
            ['B', pubB, waitingB],
          ];
    for (const [name, publisher, waiting] of order) {
      const sentAt = performance.now();
      publisher.append({ kind: 'chunk', offset: i, bytes: new Uint8Array([1]) });
      await waiting;
      waits.push(`${name}:${Math.round(performance.now() - sentAt)}`);
    }
  }
  readerA.close();
  readerB.close();
  return waits;
}
