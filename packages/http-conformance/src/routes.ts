import { setTimeout as sleep } from 'node:timers/promises';
import { gzipSync } from 'node:zlib';

/** What a route answers, framework-neutral; each driver writes it natively. */
export interface Reply {
  status: number;
  headers: Record<string, string>;
  /** The whole body, or chunks to write one by one as they come (the iterable may throw midway). */
  body: Uint8Array<ArrayBuffer> | AsyncIterable<Uint8Array<ArrayBuffer>>;
}

/** What a driver hands a behaviour of the request it received. */
export interface BehaviourInput {
  /** The body as the framework parsed it (JSON value, bytes, text), or undefined. */
  body: unknown;
  query: URLSearchParams;
  /** The {@link TENANT_HEADER} request header. */
  tenant: string | undefined;
}

/** One route of the scenario app. It may throw (the framework answers 500). */
export type Behaviour = (input: BehaviourInput) => Promise<Reply>;

const encoder = new TextEncoder();

/** The text the `/coded` route compresses. */
export const CODED_TEXT = 'the coded report; '.repeat(200);

/**
 * What the `/headers` route answers for each recorded header but Content-Encoding (`/coded`
 * has that one): values with parameters, lists and dates, as a replay must carry them.
 */
export const RECORDED_HEADER_VALUES: Readonly<Record<string, string>> = {
  'cache-control': 'private, max-age=60',
  'content-disposition': 'attachment; filename="report.txt"',
  'content-language': 'en-GB, fr',
  'content-location': '/headers/report',
  'content-type': 'text/plain; charset=utf-8; format=flowed',
  etag: '"h-1"',
  expires: 'Wed, 21 Oct 2037 07:28:00 GMT',
  'last-modified': 'Tue, 20 Oct 2037 07:28:00 GMT',
  link: '</headers?page=2>; rel="next", </headers?page=9>; rel="last"',
  location: '/headers/1',
  'retry-after': '120',
  vary: 'accept-language, x-tenant',
  'x-content-type-options': 'nosniff',
};

/** Events the `/sse` route sends. */
export const SSE_EVENTS = 5;

/** Every byte value, so a body that went through a text decoding would differ. */
export function binaryPayload(seed: number): Uint8Array<ArrayBuffer> {
  const bytes = new Uint8Array(4 * 256 + 1);
  for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 7 + seed) & 0xff;
  return bytes;
}

/** Chunk `index` of run `run` of the `/stream` route: `size` bytes that tell runs apart. */
export function streamChunk(run: number, index: number, size: number): Uint8Array<ArrayBuffer> {
  const bytes = new Uint8Array(size);
  for (let i = 0; i < size; i++) bytes[i] = (run * 31 + index * 7 + i) & 0xff;
  return bytes;
}

async function* sseEvents(
  run: number,
  gapMs: number,
  failAt: number,
): AsyncIterable<Uint8Array<ArrayBuffer>> {
  for (let seq = 0; seq < SSE_EVENTS; seq++) {
    if (seq > 0) await sleep(gapMs);
    if (seq === failAt) throw new Error('upstream stream broke');
    // Events of different lengths, so chunk boundaries are visible in the record.
    yield encoder.encode(
      `id: ${seq}\nevent: token\ndata: ${JSON.stringify({ run, seq, text: 'x'.repeat(seq * 3) })}\n\n`,
    );
  }
}

async function* chunks(
  run: number,
  count: number,
  size: number,
  gapMs: number,
): AsyncIterable<Uint8Array<ArrayBuffer>> {
  for (let index = 0; index < count; index++) {
    if (index > 0 && gapMs > 0) await sleep(gapMs);
    yield streamChunk(run, index, size);
  }
}

async function* brokenStream(): AsyncIterable<Uint8Array<ArrayBuffer>> {
  yield encoder.encode('part one\n');
  await sleep(10);
  yield encoder.encode('part two\n');
  await sleep(10);
  throw new Error('upstream stream broke');
}

function jsonReply(status: number, value: unknown, headers: Record<string, string> = {}): Reply {
  return {
    status,
    headers: { 'content-type': 'application/json', ...headers },
    body: encoder.encode(JSON.stringify(value)),
  };
}

const numberParam = (query: URLSearchParams, name: string, fallback: number) => {
  const value = Number(query.get(name) ?? fallback);
  return Number.isFinite(value) ? value : fallback;
};

/**
 * The routes every scenario app serves, with per-route call counters (a call is counted
 * when the behaviour starts, before any delay):
 *
 * | path       | answer                                                                       |
 * | ---------- | ---------------------------------------------------------------------------- |
 * | `/charges` | 201 JSON `{ charge, tenant, received }` after `?delay=` ms, Set-Cookie, Location |
 * | `/accept`  | 202 JSON `{ accepted }` (the body is not echoed)                             |
 * | `/throws`  | throws before answering                                                      |
 * | `/fails`   | `?status=` (502) JSON                                                        |
 * | `/headers` | 201 text with every header of {@link RECORDED_HEADER_VALUES}, and an unrecorded one |
 * | `/empty`   | 201 without a body, with a Location                                          |
 * | `/binary`  | 200 `application/octet-stream`, 1025 bytes of every value                    |
 * | `/sse`     | 200 `text/event-stream`, {@link SSE_EVENTS} events `?gap=` ms apart (10); with `?fail=n`, throws instead of event n |
 * | `/stream`  | 200 octet stream of `?chunks=` (4) chunks of `?size=` (256) bytes, `?gap=` ms apart |
 * | `/broken`  | 200 text stream that throws after two chunks                                 |
 * | `/endless` | 200 octet stream that does not end (500 chunks), a chunk every `?gap=` ms (20); each chunk produced counts as a call of `/endless:chunks` |
 * | `/coded`   | 201 {@link CODED_TEXT} gzipped `?layers=` (1) times, `Content-Encoding: gzip` that many times, `ETag: "coded"`, `Vary: accept-language`; with `?allow=`, CORS fields granting that origin |
 */
export function createRoutes(): {
  routes: ReadonlyMap<string, Behaviour>;
  calls(path: string): number;
} {
  const counts = new Map<string, number>();
  const count = (path: string) => {
    const n = (counts.get(path) ?? 0) + 1;
    counts.set(path, n);
    return n;
  };
  const routes = new Map<string, Behaviour>([
    [
      '/charges',
      async ({ body, query, tenant }) => {
        const n = count('/charges');
        const delay = numberParam(query, 'delay', 0);
        if (delay > 0) await sleep(delay);
        return jsonReply(
          201,
          { charge: n, tenant: tenant ?? null, received: body ?? null },
          {
            'set-cookie': `session=s${n}; Path=/; HttpOnly`,
            location: `/charges/${n}`,
            'x-unrecorded': `n${n}`,
          },
        );
      },
    ],
    ['/accept', async () => jsonReply(202, { accepted: count('/accept') })],
    [
      '/throws',
      async () => {
        count('/throws');
        throw new Error('handler exploded');
      },
    ],
    [
      '/fails',
      async ({ query }) =>
        jsonReply(numberParam(query, 'status', 502), {
          error: 'upstream failed',
          attempt: count('/fails'),
        }),
    ],
    [
      '/headers',
      async () => ({
        status: 201,
        headers: { ...RECORDED_HEADER_VALUES, 'x-unrecorded': `n${count('/headers')}` },
        body: encoder.encode('every recorded header\n'),
      }),
    ],
    [
      '/empty',
      async () => ({
        status: 201,
        headers: { location: `/empty/${count('/empty')}` },
        body: new Uint8Array(0),
      }),
    ],
    [
      '/binary',
      async () => ({
        status: 200,
        headers: { 'content-type': 'application/octet-stream' },
        body: binaryPayload(count('/binary')),
      }),
    ],
    [
      '/sse',
      async ({ query }) => ({
        status: 200,
        headers: { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' },
        body: sseEvents(
          count('/sse'),
          numberParam(query, 'gap', 10),
          numberParam(query, 'fail', SSE_EVENTS),
        ),
      }),
    ],
    [
      '/stream',
      async ({ query }) => ({
        status: 200,
        headers: { 'content-type': 'application/octet-stream' },
        body: chunks(
          count('/stream'),
          numberParam(query, 'chunks', 4),
          numberParam(query, 'size', 256),
          numberParam(query, 'gap', 0),
        ),
      }),
    ],
    [
      '/endless',
      async ({ query }) => {
        count('/endless');
        const gap = numberParam(query, 'gap', 20);
        async function* forever(): AsyncIterable<Uint8Array<ArrayBuffer>> {
          // Endless for any scenario; bounded (500 chunks) so an integration that never
          // cancels it does not leave it running for the rest of the test run.
          for (let index = 0; index < 500; index++) {
            if (index > 0) await sleep(gap);
            count('/endless:chunks');
            yield streamChunk(0, index, 16);
          }
        }
        return {
          status: 200,
          headers: { 'content-type': 'application/octet-stream' },
          body: forever(),
        };
      },
    ],
    [
      '/coded',
      async ({ query }) => {
        count('/coded');
        const layers = Math.max(1, Math.min(20, numberParam(query, 'layers', 1)));
        let body = encoder.encode(CODED_TEXT) as Uint8Array<ArrayBuffer>;
        for (let i = 0; i < layers; i++) body = new Uint8Array(gzipSync(body));
        const headers: Record<string, string> = {
          'content-type': 'text/plain',
          'content-encoding': Array(layers).fill('gzip').join(', '),
          etag: '"coded"',
          vary: 'accept-language',
        };
        const allow = query.get('allow');
        if (allow) {
          headers['access-control-allow-origin'] = allow;
          headers['access-control-allow-credentials'] = 'true';
        }
        return { status: 201, headers, body };
      },
    ],
    [
      '/broken',
      async () => {
        count('/broken');
        return { status: 200, headers: { 'content-type': 'text/plain' }, body: brokenStream() };
      },
    ],
  ]);
  return { routes, calls: (path) => counts.get(path) ?? 0 };
}
