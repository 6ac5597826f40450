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

const withCafe =
  (status: number, flush: boolean): RecordedApp =>
  (_req, res) => {
    res.statusCode = status;
    res.setHeader('content-disposition', 'attachment; filename="caf\u00e9.txt"');
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

  // FINDING low: on Node 20.20, a value set with `setHeader` and sent by `res.end('text')`
  // reaches the first client as the byte 0xFD (the low byte of U+FFFD: the head string Node
  // builds holds U+FFFD there, which the recorder's Latin-1 send cuts to one byte), while
  // every replay sends 0xE9. Without idem Node 20.20 sends EF BF BD (U+FFFD in UTF-8) for the
  // same app, not the UTF-8 of `é` the README describes. The first client and the replays
  // disagree on the bytes of such a field. Held to Node 20, where it was seen (not checked on
  // 22 and 24).
  const node20 = process.versions.node.startsWith('20.');
  for (const [name, status] of [
    ['a recorded response (200)', 200],
    ['a response not recorded (400)', 400],
  ] as const)
    (node20 ? it.fails : it.skip)(
      `goes out as Latin-1 on res.end('text') too: ${name}`,
      async () => {
        const first = await firstHead(withCafe(status, false));
        expect(first.includes(LATIN1), first.toString('latin1')).toBe(true);
      },
    );
});
