import { request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

/** What a test client saw of one exchange. */
export interface Exchange {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
  /** False when the connection broke before the response ended. */
  complete: boolean;
}

export interface SendOptions {
  method?: string;
  /** Raw `Idempotency-Key` field value (bytes above 0x7F are sent as latin1); null for none. */
  key?: string | null;
  /** JSON value, or raw bytes. */
  body?: unknown;
  headers?: Record<string, string>;
  /** Fails the exchange instead of hanging. @default 5000 */
  timeoutMs?: number;
}

/** Sends one request over real HTTP on loopback. */
export function send(baseUrl: string, path: string, options: SendOptions = {}): Promise<Exchange> {
  const url = new URL(path, baseUrl);
  const raw =
    options.body === undefined
      ? undefined
      : Buffer.isBuffer(options.body)
        ? options.body
        : Buffer.from(JSON.stringify(options.body));
  const headers: Record<string, string> = { ...options.headers };
  if (raw !== undefined) {
    headers['content-type'] ??= Buffer.isBuffer(options.body)
      ? 'application/octet-stream'
      : 'application/json';
    headers['content-length'] = String(raw.length);
  }
  if (options.key !== undefined && options.key !== null) headers['idempotency-key'] = options.key;
  return new Promise((resolve, reject) => {
    const req = request(url, { method: options.method ?? 'POST', headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      const finish = () =>
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          body: Buffer.concat(chunks),
          complete: res.complete,
        });
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', finish);
      res.on('error', finish);
      res.on('aborted', finish);
    });
    req.setTimeout(options.timeoutMs ?? 5_000, () => req.destroy(new Error(`${url} timed out`)));
    req.on('error', reject);
    req.end(raw);
  });
}

export function json(exchange: Exchange): unknown {
  return JSON.parse(exchange.body.toString('utf8'));
}

/** Waits until `server` listens, then gives its loopback URL and a `close` that resolves when it closed. */
export async function listening(server: Server): Promise<{ url: string; close(): Promise<void> }> {
  if (!server.listening) await new Promise<void>((resolve) => server.once('listening', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
