import { type Agent, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { RunningApp } from './options.js';
import { TENANT_HEADER } from './options.js';

/** What a test client saw of one exchange. */
export interface Exchange {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
  /** Body chunks as they arrived. */
  chunks: Buffer[];
  /** False when the connection broke (or the client left) before the response ended. */
  complete: boolean;
}

/** How the suite's client sends one request. */
export interface SendOptions {
  method?: string;
  /**
   * Raw `Idempotency-Key` field value (bytes above 0x7F are sent as latin1); several values
   * are sent as repeated header lines; null or absent for none.
   */
  key?: string | readonly string[] | null;
  /** JSON value, or raw bytes. */
  body?: unknown;
  headers?: Record<string, string>;
  /** The {@link TENANT_HEADER} value; null sends none. @default 'tenant-a' */
  tenant?: string | null;
  /** Fails the exchange instead of hanging. @default 5000 */
  timeoutMs?: number;
  /** Called with the body bytes received so far, after each chunk that arrives. */
  onData?: (received: number) => void;
  /** Goes away (destroys the connection) once this many body bytes arrived. */
  leaveAfterBytes?: number;
  /**
   * Sends the body with `Transfer-Encoding: chunked` (no Content-Length), in two chunks when it
   * has two bytes or more. @default false
   */
  chunked?: boolean;
  /** The agent (a keep-alive one reuses connections). @default a fresh connection */
  agent?: Agent;
}

/** Sends one request over real HTTP on loopback, on a fresh connection (unless an `agent` is given). */
export function send(baseUrl: string, path: string, options: SendOptions = {}): Promise<Exchange> {
  const url = new URL(path, baseUrl);
  const raw =
    options.body === undefined
      ? undefined
      : Buffer.isBuffer(options.body)
        ? options.body
        : Buffer.from(JSON.stringify(options.body));
  const headers: Record<string, string | string[]> = { ...options.headers };
  if (raw !== undefined) {
    headers['content-type'] ??= Buffer.isBuffer(options.body)
      ? 'application/octet-stream'
      : 'application/json';
    if (options.chunked) headers['transfer-encoding'] = 'chunked';
    else headers['content-length'] = String(raw.length);
  }
  if (options.key !== undefined && options.key !== null)
    headers['idempotency-key'] = typeof options.key === 'string' ? options.key : [...options.key];
  const tenant = options.tenant === undefined ? 'tenant-a' : options.tenant;
  if (tenant !== null) headers[TENANT_HEADER] = tenant;
  return new Promise((resolve, reject) => {
    const agent = options.agent ?? false;
    const req = request(url, { method: options.method ?? 'POST', headers, agent }, (res) => {
      const chunks: Buffer[] = [];
      let received = 0;
      let settled = false;
      const finish = (complete: boolean) => {
        if (settled) return;
        settled = true;
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          body: Buffer.concat(chunks),
          chunks,
          complete,
        });
      };
      res.on('data', (chunk: Buffer) => {
        chunks.push(chunk);
        received += chunk.length;
        options.onData?.(received);
        if (options.leaveAfterBytes !== undefined && received >= options.leaveAfterBytes) {
          finish(false);
          req.destroy();
        }
      });
      res.on('end', () => finish(res.complete));
      res.on('error', () => finish(false));
      res.on('aborted', () => finish(false));
      res.on('close', () => finish(res.complete));
    });
    req.setTimeout(options.timeoutMs ?? 5_000, () => req.destroy(new Error(`${url} timed out`)));
    req.on('error', reject);
    if (options.chunked && raw !== undefined && raw.length > 1) {
      req.write(raw.subarray(0, 1));
      req.end(raw.subarray(1));
    } else req.end(raw);
  });
}

/**
 * What a test saw of one keyed request to a route that answers 201 `{ got }` (what it read of
 * the body): the status, whether it is a replay (`Idempotent-Replayed: true`), and `got` of a
 * 201 (undefined for any other status).
 */
export interface GotReply {
  status: number;
  replayed: boolean;
  got: unknown;
}

/**
 * Sends `body` as a `POST path` under `key` with `contentType` (node:http: a character of the
 * Content-Type is sent as its Latin-1 byte, U+00A0 as A0), without a tenant header, and sums
 * up the answer as a {@link GotReply}.
 */
export async function postGot(
  baseUrl: string,
  path: string,
  key: string,
  body: Buffer,
  contentType: string,
): Promise<GotReply> {
  const reply = await send(baseUrl, path, {
    key,
    tenant: null,
    body,
    headers: { 'content-type': contentType },
  });
  return {
    status: reply.status,
    replayed: reply.headers['idempotent-replayed'] === 'true',
    got: reply.status === 201 ? (json(reply) as { got: unknown }).got : undefined,
  };
}

/** The body of an exchange as JSON. */
export function json(exchange: Exchange): unknown {
  return JSON.parse(exchange.body.toString('utf8'));
}

/**
 * For drivers: waits until `server` listens, then gives its loopback URL and a `close`
 * that resolves once it closed (open connections are closed too).
 */
export async function listening(server: Server): Promise<RunningApp> {
  if (!server.listening) await new Promise<void>((resolve) => server.once('listening', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections?.();
      }),
  };
}
