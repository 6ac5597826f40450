import { createServer as createH1Server, request as h1Request } from 'node:http';
import { createServer as createH2Server } from 'node:http2';
import type { Socket } from 'node:net';
import {
  type App,
  h2,
  listenLoopback,
  type RecordingOptions,
  recordedHandler,
  session,
} from './h2c.js';

// rv21c: one idem handler behind a real node:http and a real h2c server on loopback, and a
// client that sends raw request headers as given (duplicates, any case, no header added).

/** An answer as the client got it; header names lowercase, repeated values joined. */
export interface RawAnswer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

/** A flat name, value… list as node:http sends it: a name given twice (same case) is two lines. */
function rawHeaders(raw: string[]): Record<string, string | string[]> {
  const out: Record<string, string[]> = {};
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i] as string;
    out[name] = [...(out[name] ?? []), raw[i + 1] as string];
  }
  return out;
}

/** Both servers behind one handler (one store): `h1` and `h2` send a keyed POST to `path`. */
export async function serveBoth(app: App, options: RecordingOptions = {}) {
  const { handle, runs } = recordedHandler(app, options);
  const h1Port = await listenLoopback(createH1Server((req, res) => void handle(req, res)));
  const h2Server = createH2Server();
  h2Server.on('request', (req, res) => void handle(req as never, res as never));
  const h2Port = await listenLoopback(h2Server as never, [] as Socket[]);
  const client = session(h2Port);
  return {
    runs,
    /** `raw`: header name, value, name, value… as sent (node:http, `Connection: close`). */
    h1: (path: string, key: string, raw: string[] = []): Promise<RawAnswer> =>
      new Promise((resolve, reject) => {
        const req = h1Request({
          host: '127.0.0.1',
          port: h1Port,
          method: 'POST',
          path,
          agent: false,
          headers: rawHeaders(['idempotency-key', key, 'content-length', '1', ...raw]),
          timeout: 10_000,
        });
        req.on('timeout', () => req.destroy(new Error('no answer in 10 s')));
        req.on('error', reject);
        req.on('response', (res) => {
          const parts: Buffer[] = [];
          res.on('data', (chunk: Buffer) => parts.push(chunk));
          res.on('error', reject);
          res.on('end', () =>
            resolve({
              status: res.statusCode ?? 0,
              headers: res.headers,
              body: Buffer.concat(parts),
            }),
          );
        });
        req.end('b');
      }),
    h2: async (path: string, key: string, extra: Record<string, string> = {}) => {
      const answer = await h2(client, key, 'b', extra, path);
      return { status: answer.status, headers: answer.headers, body: answer.body } as RawAnswer;
    },
  };
}
