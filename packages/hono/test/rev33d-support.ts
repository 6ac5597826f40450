import { Agent, request as httpRequest } from 'node:http';
import {
  type ClientHttp2Session,
  createServer as createH2Server,
  connect as http2Connect,
} from 'node:http2';
import type { AddressInfo } from 'node:net';
import { type ServerType, serve } from '@hono/node-server';
import type { Hono } from 'hono';

/** What one request got back: status, headers (lower-case, no HTTP/2 pseudo-headers), raw body bytes. */
export interface Got {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
}

export interface Client {
  name: string;
  /** A request; `leaveAfter`: bytes of body after which the client drops the request. */
  send(
    path: string,
    init: {
      method?: string;
      key?: string;
      headers?: Record<string, string>;
      body?: string;
      leaveAfter?: number;
    },
  ): Promise<Got>;
  close(): void;
}

function flat(headers: Record<string, string | string[] | undefined>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (name.startsWith(':') || value === undefined) continue;
    out[name] = Array.isArray(value) ? value.join(', ') : value;
  }
  return out;
}

/** Serves `app` over HTTP/1.1 with one keep-alive connection for every request. */
export async function http1(app: Hono, servers: ServerType[]): Promise<Client> {
  const port = await new Promise<number>((resolve) => {
    servers.push(
      serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, (info) => resolve(info.port)),
    );
  });
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  return {
    name: 'HTTP/1.1 keep-alive',
    close: () => agent.destroy(),
    send: (path, init) =>
      new Promise<Got>((resolve, reject) => {
        const headers: Record<string, string> = { ...init.headers };
        if (init.key) headers['idempotency-key'] = init.key;
        if (init.body !== undefined) headers['content-type'] ??= 'application/json';
        const req = httpRequest(
          { host: '127.0.0.1', port, path, method: init.method ?? 'POST', headers, agent },
          (res) => {
            const parts: Buffer[] = [];
            let length = 0;
            const done = () =>
              resolve({
                status: res.statusCode ?? 0,
                headers: flat(res.headers),
                body: Buffer.concat(parts),
              });
            res.on('data', (chunk: Buffer) => {
              parts.push(chunk);
              length += chunk.length;
              if (init.leaveAfter !== undefined && length >= init.leaveAfter) {
                req.destroy();
                done();
              }
            });
            res.on('end', done);
            res.on('error', () => done());
          },
        );
        req.on('error', (error) => {
          if (init.leaveAfter === undefined) reject(error);
        });
        req.setTimeout(10_000, () => req.destroy(new Error('client timeout')));
        req.end(init.body);
      }),
  };
}

/** Serves `app` over HTTP/2 (h2c), one session for every request. */
export async function http2(app: Hono, servers: ServerType[]): Promise<Client> {
  const session = await new Promise<ClientHttp2Session>((resolve) => {
    servers.push(
      serve(
        { fetch: app.fetch, port: 0, hostname: '127.0.0.1', createServer: createH2Server },
        (info: AddressInfo) => {
          const client = http2Connect(`http://127.0.0.1:${info.port}`);
          client.on('error', () => {});
          resolve(client);
        },
      ),
    );
  });
  return {
    name: 'HTTP/2',
    close: () => session.destroy(),
    send: (path, init) =>
      new Promise<Got>((resolve, reject) => {
        const headers: Record<string, string> = {
          ':method': init.method ?? 'POST',
          ':path': path,
          ...init.headers,
        };
        if (init.key) headers['idempotency-key'] = init.key;
        if (init.body !== undefined) headers['content-type'] ??= 'application/json';
        const stream = session.request(headers);
        let status = 0;
        let got: Record<string, string> = {};
        const parts: Buffer[] = [];
        let length = 0;
        let settled = false;
        const done = () => {
          if (settled) return;
          settled = true;
          resolve({ status, headers: got, body: Buffer.concat(parts) });
        };
        stream.on('response', (h) => {
          status = Number(h[':status']);
          got = flat(h as Record<string, string | string[] | undefined>);
        });
        stream.on('data', (chunk: Buffer) => {
          parts.push(chunk);
          length += chunk.length;
          if (init.leaveAfter !== undefined && length >= init.leaveAfter) {
            stream.close(8);
            done();
          }
        });
        stream.on('end', done);
        stream.on('close', done);
        stream.on('error', (error) => {
          if (init.leaveAfter === undefined && !settled) reject(error);
        });
        stream.setTimeout(10_000, () => stream.close(8));
        stream.end(init.body);
      }),
  };
}

export const CLIENTS = [http1, http2] as const;

export function closeAll(servers: ServerType[]): Promise<unknown> {
  return Promise.all(
    servers.splice(0).map((server) => new Promise((resolve) => server.close(() => resolve(1)))),
  );
}

let counter = 0;
export const keyOf = (name: string) => `rev33d-${name}-${process.pid}-${++counter}`;
