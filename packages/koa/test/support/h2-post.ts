import type { ClientHttp2Session, IncomingHttpHeaders } from 'node:http2';

/** What a keyed POST answered: its status, and whether it was a replay. */
export interface H2Reply {
  status: number;
  replayed: boolean;
}

/**
 * A form POST /charges under `key` on an HTTP/2 `session`, with `extra` headers (`x-kept` for
 * the readers of the tests), its body read to the end.
 */
export function h2FormPost(
  session: ClientHttp2Session,
  key: string,
  body: Buffer,
  extra: Record<string, string> = {},
): Promise<H2Reply> {
  return new Promise<H2Reply>((resolve, reject) => {
    const request = session.request({
      ':method': 'POST',
      ':path': '/charges',
      'content-type': 'application/x-www-form-urlencoded',
      'idempotency-key': key,
      ...extra,
    });
    let headers: IncomingHttpHeaders = {};
    request.on('response', (h) => {
      headers = h;
    });
    request.resume();
    request.on('end', () =>
      resolve({
        status: Number(headers[':status']),
        replayed: headers['idempotent-replayed'] !== undefined,
      }),
    );
    request.on('error', reject);
    request.end(body);
  });
}
