/**
 * Measures (run with `node --expose-gc --import tsx`) what a live stream holds on the memory
 * channel: the bytes of one in-flight stream of BODY_MIB MiB, then of READERS readers
 * attached from the start and READERS resumed mid-way, each holding the piece it read.
 * Prints one JSON line: { body, stream, perAttached, perResumed } in bytes.
 */
import { createMemoryStore } from '@idem/store-memory';
import { withIdempotency } from '../../src/index.js';
import { fedEventStream } from '../support/streamed-bodies.js';

const MiB = 1024 * 1024;
const CHUNK = 4096;
const bodyBytes = Number(process.env.BODY_MIB ?? 1) * MiB;
const readersCount = Number(process.env.READERS ?? 20);
const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error('run with --expose-gc');
const held = () => {
  gc();
  gc();
  const usage = process.memoryUsage();
  return usage.arrayBuffers + usage.heapUsed;
};
const encoder = new TextEncoder();
const feeds: ReadableStreamDefaultController<Uint8Array>[] = [];
const handle = withIdempotency(async () => fedEventStream(feeds), {
  store: createMemoryStore(),
  scope: () => ({ principal: 'p' }),
  onWarning: () => {},
  maxOutcomeBytes: 4 * bodyBytes,
  liveStreams: { maxReaders: 4 * readersCount, stallMs: 60_000 },
});
const post = (key: string, headers: Record<string, string> = {}) =>
  new Request('http://127.0.0.1/stream', {
    method: 'POST',
    headers: { 'idempotency-key': key, ...headers },
    body: '{}',
  });
const event = (id: number, size: number) => {
  const bytes = new Uint8Array(size).fill(120);
  bytes.set(encoder.encode(`id: ${id}\ndata: `), 0);
  bytes[size - 2] = 10;
  bytes[size - 1] = 10;
  return bytes;
};

// Warm-up (code and the objects every request makes), completed, before the baseline.
{
  const first = (await handle(post('warm'))).body!.getReader();
  const feed = feeds.at(-1)!;
  feed.enqueue(event(1, 64));
  await first.read();
  const attached = (await handle(post('warm'))).body!.getReader();
  await attached.read();
  const resumed = (await handle(post('warm', { 'last-event-id': '1' }))).body!.getReader();
  feed.enqueue(event(2, 64));
  await Promise.all([first.read(), attached.read(), resumed.read()]);
  feed.close();
  await first.read();
  await Promise.all([attached.cancel(), resumed.cancel()]);
}
const base = held();
const first = (await handle(post('k'))).body!.getReader();
const feed = feeds.at(-1)!;
const events = bodyBytes / CHUNK;
for (let i = 1; i <= events; i++) {
  feed.enqueue(event(i, CHUNK));
  await first.read();
}
const stream = held() - base;
const pieces: Uint8Array[] = [];
const readers: ReadableStreamDefaultReader<Uint8Array>[] = [];
const attach = async (headers: Record<string, string>) => {
  const response = await handle(post('k', headers));
  if (response.status !== 200) throw new Error(`attach answered ${response.status}`);
  const reader = response.body!.getReader();
  pieces.push((await reader.read()).value!);
  readers.push(reader);
};
for (let i = 0; i < readersCount; i++) await attach({});
const attached = held() - base;
for (let i = 0; i < readersCount; i++) await attach({ 'last-event-id': String(events / 2) });
const resumed = held() - base;
console.log(
  JSON.stringify({
    body: bodyBytes,
    stream,
    perAttached: (attached - stream) / readersCount,
    perResumed: (resumed - attached) / readersCount,
    pieces: pieces.reduce((n, piece) => n + piece.length, 0),
  }),
);
feed.close();
for (const reader of readers) await reader.cancel();
await first.cancel().catch(() => {});
process.exit(0);
