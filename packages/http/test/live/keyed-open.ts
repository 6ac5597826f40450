/**
 * The clients of the live children (`readahead-abort-child.ts`, and @idem/fastify's
 * `h2-break-child.ts`): a keyed POST `/` (key `k`, body `{}`), over `client` (an h2c session)
 * or, without one, HTTP/1.1 on its own connection. `done` tells how it ended: `status
 * replayed=… "body" ended|broken` (an HTTP/2 stream reset before END_STREAM is broken, with
 * NO_ERROR too).
 */
import { request as h1Request } from 'node:http';
import { type ClientHttp2Session, constants } from 'node:http2';

export interface Opened {
  first: Promise<void>;
  done: Promise<string>;
  leave(): void;
}

export function openKeyed(
  port: number,
  client: ClientHttp2Session | undefined,
  extra: Record<string, string> = {},
): Opened {
  let first = () => {};
  const firstCame = new Promise<void>((resolve) => {
    first = resolve;
  });
  const headers = { 'idempotency-key': 'k', 'content-type': 'application/json', ...extra };
  if (client) {
    const stream = client.request({ ':method': 'POST', ':path': '/', ...headers });
    let status = 0;
    let replayed = false;
    let body = '';
    let ended = false;
    const done = new Promise<string>((resolve) => {
      stream.on('response', (h) => {
        status = Number(h[':status']);
        replayed = h['idempotent-replayed'] === 'true';
      });
      stream.on('data', (chunk: Buffer) => {
        body += chunk.toString();
        first();
      });
      stream.on('end', () => {
        ended = true;
      });
      stream.on('error', () => {});
      stream.on('close', () =>
        resolve(
          `${status} replayed=${replayed} ${JSON.stringify(body)} ${ended && stream.rstCode === 0 ? 'ended' : 'broken'}`,
        ),
      );
    });
    stream.end('{}');
    return { first: firstCame, done, leave: () => stream.close(constants.NGHTTP2_CANCEL) };
  }
  let req: ReturnType<typeof h1Request> | undefined;
  const done = new Promise<string>((resolve) => {
    req = h1Request({
      host: '127.0.0.1',
      port,
      method: 'POST',
      path: '/',
      agent: false,
      headers,
    });
    req.on('error', () => resolve('broken'));
    req.on('response', (res) => {
      let body = '';
      res.on('data', (chunk: Buffer) => {
        body += chunk.toString();
        first();
      });
      const replayed = res.headers['idempotent-replayed'] === 'true';
      const seen = (end: string) =>
        resolve(`${res.statusCode} replayed=${replayed} ${JSON.stringify(body)} ${end}`);
      res.on('end', () => seen(res.complete ? 'ended' : 'broken'));
      res.on('error', () => seen('broken'));
      res.on('close', () => seen('broken'));
    });
    req.end('{}');
  });
  return { first: firstCame, done, leave: () => req?.destroy() };
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const bounded = <T>(promise: Promise<T>, ms: number) =>
  Promise.race([promise, sleep(ms).then(() => 'hung' as const)]);

/**
 * The children's scene: a first client, a reader attached once the first chunk came, the first
 * client leaves; then (50 ms on) a retry with `x-quick`. Answers how the reader and the retry
 * ended ('hung' past 3 s).
 */
export async function firstLeaves(open: (extra?: Record<string, string>) => Opened) {
  const first = open();
  await bounded(first.first, 3_000);
  const attached = open();
  await bounded(attached.first, 3_000);
  first.leave();
  const reader = await bounded(attached.done, 3_000);
  // Released at once: the retry runs again (it would attach, or get 409, while in progress).
  await sleep(50);
  const retry = await bounded(open({ 'x-quick': '1' }).done, 3_000);
  return { reader, retry };
}
