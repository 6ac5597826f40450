import { connect } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import type { RecordedApp } from './support/recorded-server.js';
import { closeRecordedServers, serveRecorded } from './support/recorded-server.js';

// README "Header values as bytes": on the Node path the head always goes out as Latin-1
// while it is recorded, so `café` reaches the first client as the bytes a replay sends
// (0xE9), also for a head Node sends with a string (`res.end('text')`, `flushHeaders`), which
// it would otherwise send as UTF-8. Mutation audit (muthttp): the encoding of that head could
// be changed with every other test passing.

afterEach(closeRecordedServers);

/** The raw bytes of the answer to a keyed POST (the connection closed by the server). */
function raw(url: string, key: string): Promise<Buffer> {
  const { port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), '127.0.0.1');
    const parts: Buffer[] = [];
    socket.on('data', (chunk: Buffer) => parts.push(chunk));
    socket.on('end', () => resolve(Buffer.concat(parts)));
    socket.on('error', reject);
    socket.write(
      `POST /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\nIdempotency-Key: ${key}\r\nContent-Length: 1\r\n\r\nx`,
    );
  });
}

const LATIN1 = Buffer.from('filename="caf\u00e9.txt"', 'latin1');
const UTF8 = Buffer.from('filename="caf\u00e9.txt"', 'utf8');

/** An app that answers `status` with `name: …café…`, flushing the head first when `flush`. */
const withCafe =
  (status: number, flush: boolean, name = 'content-disposition'): RecordedApp =>
  (_req, res) => {
    res.statusCode = status;
    res.setHeader(name, 'attachment; filename="caf\u00e9.txt"');
    if (flush) res.flushHeaders();
    res.end('body');
  };

async function firstHead(app: RecordedApp): Promise<Buffer> {
  const url = await serveRecorded(app);
  return raw(url, 'l-1');
}

describe('a head with a value past ASCII on the Node path', () => {
  it('goes out as Latin-1 when the app flushes it (flushHeaders), then ends with a string', async () => {
    const first = await firstHead(withCafe(200, true));
    expect(first.includes(LATIN1), first.toString('latin1')).toBe(true);
    expect(first.includes(UTF8)).toBe(false);
  });

  it.each([
    ['a recorded response (200)', 200],
    ['a response not recorded (400)', 400],
  ] as const)("goes out as Latin-1 on res.end('text'): %s", async (_name, status) => {
    const first = await firstHead(withCafe(status, false, 'x-note'));
    expect(first.includes(LATIN1), first.toString('latin1')).toBe(true);
    expect(first.includes(UTF8)).toBe(false);
  });

  // FINDING low: Node 20.20 itself rewrites a Content-Disposition value when it sends it with
  // a Content-Length (`res.end('text')`): the head string it builds holds U+FFFD for the `é`
  // (the value read as Latin-1 bytes, then as UTF-8), so without idem the client gets EF BF BD
  // and with idem (the head sent as Latin-1) the byte 0xFD, while every replay sends the
  // recorded `é` as 0xE9: the first client and the replays disagree on that field's bytes
  // (README "Header values as bytes" says both get 0xE9). Other fields are not touched (the
  // case above). Seen on Node 20.20 and 24.22 alike.
  it.fails("sends a Content-Disposition past ASCII as Latin-1 on res.end('text') too", async () => {
    const first = await firstHead(withCafe(200, false));
    expect(first.includes(LATIN1), first.toString('latin1')).toBe(true);
  });
});
