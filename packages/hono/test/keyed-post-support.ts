import { type ServerType, serve } from '@hono/node-server';
import type { Hono } from 'hono';

/** What a keyed POST answered (see {@link keyedPost}). */
export interface KeyedReply {
  status: number;
  replayed: boolean;
  /** The body, or `(cut)` when it broke off. */
  text: string;
}

/** Serves `app` on loopback (port 0) under @hono/node-server, adds it to `servers`; its port. */
export function serveOnLoopback(app: Hono, servers: ServerType[]): Promise<number> {
  return new Promise<number>((resolve) => {
    const server = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, (info) =>
      resolve(info.port),
    );
    servers.push(server);
  });
}

/** A POST without a body to `url` under `key`, bounded by 5 s, its body read whole. */
export async function keyedPost(url: string, key: string): Promise<KeyedReply> {
  const response = await fetch(url, {
    method: 'POST',
    headers: { 'idempotency-key': key },
    signal: AbortSignal.timeout(5_000),
  });
  return {
    status: response.status,
    replayed: response.headers.get('idempotent-replayed') === 'true',
    text: await response.text().catch(() => '(cut)'),
  };
}
