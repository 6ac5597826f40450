import { connect } from 'node:net';

/**
 * Sends one request on a connection of its own (`Connection: close`) and resolves with the
 * raw bytes of the response, for checks that must see the bytes a client got (a status
 * line's reason phrase as Latin-1, header spellings). The request: `POST path` with the
 * `Idempotency-Key`, a JSON body, and `extra` header lines (each ending in CRLF).
 */
export function rawPost(
  url: string,
  path: string,
  key: string,
  body = '{"a":1}',
  extra = '',
  version = '1.1',
): Promise<Buffer> {
  const { port } = new URL(url);
  return new Promise((resolve) => {
    const socket = connect(Number(port), '127.0.0.1');
    const parts: Buffer[] = [];
    const timer = setTimeout(() => socket.destroy(), 10_000);
    socket.on('data', (part: Buffer) => parts.push(part));
    socket.on('error', () => {});
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(Buffer.concat(parts));
    });
    socket.write(
      `POST ${path} HTTP/${version}\r\nHost: x\r\nConnection: close\r\nIdempotency-Key: ${key}\r\n` +
        `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n${extra}\r\n${body}`,
    );
  });
}

/** The final status line's bytes of a raw response (after any 1xx), without its CRLF. */
export function rawStatusLine(raw: Buffer): Buffer {
  let at = 0;
  while (/^HTTP\/1\.[01] 1\d\d /.test(raw.subarray(at, at + 13).toString('latin1')))
    at = raw.indexOf('\r\n\r\n', at) + 4;
  return raw.subarray(at, raw.indexOf('\r\n', at));
}

/** Whether a raw response carries `Idempotent-Replayed: true`. */
export function rawIsReplay(raw: Buffer): boolean {
  return /\r\nidempotent-replayed: true\r\n/i.test(raw.toString('latin1'));
}

/** The body of a raw response as Latin-1 text, chunked framing removed. */
export function rawBodyText(raw: Buffer): string {
  const text = raw.toString('latin1');
  const at = text.indexOf('\r\n\r\n');
  const rest = text.slice(at + 4);
  if (!/\r\ntransfer-encoding: chunked/i.test(text.slice(0, at))) return rest;
  let out = '';
  let i = 0;
  for (;;) {
    const eol = rest.indexOf('\r\n', i);
    const size = Number.parseInt(rest.slice(i, eol), 16);
    if (!(size > 0)) return out;
    out += rest.slice(eol + 2, eol + 2 + size);
    i = eol + 2 + size + 2;
  }
}
