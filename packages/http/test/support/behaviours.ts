/** What a route answers, framework-neutral; each framework driver writes it natively. */
export interface Reply {
  status: number;
  headers: Record<string, string>;
  /** The whole body, or chunks to write one by one (the iterable may throw midway). */
  body: Uint8Array<ArrayBuffer> | AsyncIterable<Uint8Array<ArrayBuffer>>;
}

export interface BehaviourInput {
  body: unknown;
  query: URLSearchParams;
  tenant: string | undefined;
}

export type Behaviour = (input: BehaviourInput) => Promise<Reply>;

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
const encoder = new TextEncoder();

export const SSE_EVENTS = 5;

/** Every byte value, so a body that went through a text decoding would differ. */
export function binaryPayload(seed: number): Uint8Array<ArrayBuffer> {
  const bytes = new Uint8Array(4 * 256 + 1);
  for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 7 + seed) & 0xff;
  return bytes;
}

async function* sseEvents(run: number): AsyncIterable<Uint8Array<ArrayBuffer>> {
  for (let seq = 0; seq < SSE_EVENTS; seq++) {
    if (seq > 0) await sleep(10);
    // Events of different lengths, so chunk boundaries are visible in the record.
    yield encoder.encode(
      `id: ${seq}\nevent: token\ndata: ${JSON.stringify({ run, seq, text: 'x'.repeat(seq * 3) })}\n\n`,
    );
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

/** The routes every framework app serves (all POST), with per-route call counters. */
export function createBehaviours(): {
  routes: Map<string, Behaviour>;
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
        const delay = Number(query.get('delay') ?? 0);
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
    [
      '/throws',
      async () => {
        count('/throws');
        throw new Error('handler exploded');
      },
    ],
    ['/fails', async () => jsonReply(502, { error: 'upstream failed', attempt: count('/fails') })],
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
      async () => ({
        status: 200,
        headers: { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' },
        body: sseEvents(count('/sse')),
      }),
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
