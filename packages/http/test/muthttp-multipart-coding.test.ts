import { createMemoryStore } from '@idem/store-memory';
import { describe, expect, it } from 'vitest';
import { PROBLEM_TYPES, REPLAYED_HEADER, withIdempotency } from '../src/index.js';

// README steps 4 and 6, where a mutation survived every other test (mutation audit, muthttp):
// a backslash in a multipart Content-Type is refused (400 malformed-body: busboy keeps a
// quoted-pair in the boundary, undici drops it), and the coding alias `x-compress` is
// `compress` (RFC 9110 8.4.1), as `x-gzip` is `gzip`.

function counting(answer: () => Response) {
  let runs = 0;
  const handler = withIdempotency(
    async () => {
      runs++;
      return answer();
    },
    { store: createMemoryStore(), scope: 'global' },
  );
  return { handler, runs: () => runs };
}

describe('a backslash in a multipart/form-data Content-Type', () => {
  it('is a malformed body (400), nothing run, though the form parses under the unescaped boundary', async () => {
    const { handler, runs } = counting(() => new Response('ran', { status: 201 }));
    const body = '--ab\r\nContent-Disposition: form-data; name="f"\r\n\r\nv\r\n--ab--\r\n';
    const send = (key: string, type: string) =>
      handler(
        new Request('http://api.test/upload', {
          method: 'POST',
          headers: { 'idempotency-key': key, 'content-type': type },
          body,
        }),
      );
    // The same form under its plain boundary runs.
    expect((await send('m-1', 'multipart/form-data; boundary=ab')).status).toBe(201);
    const refused = await send('m-2', 'multipart/form-data; boundary="a\\b"');
    expect(refused.status).toBe(400);
    expect(((await refused.json()) as { type: string }).type).toBe(PROBLEM_TYPES.malformedBody);
    expect(runs()).toBe(1);
  });
});

describe('the x-compress alias', () => {
  it('is compress: a replay recorded under one goes as it is to a retry accepting the other', async () => {
    for (const [recorded, accepted] of [
      ['x-compress', 'compress'],
      ['compress', 'x-compress'],
    ] as const) {
      const bytes = new Uint8Array([0x1f, 0x9d, 0x90, 0x61, 0x00]);
      const { handler, runs } = counting(
        () =>
          new Response(bytes, {
            status: 200,
            headers: { 'content-type': 'text/plain', 'content-encoding': recorded },
          }),
      );
      const send = () =>
        handler(
          new Request('http://api.test/z', {
            method: 'POST',
            headers: { 'idempotency-key': `z-${recorded}`, 'accept-encoding': accepted },
            body: 'x',
          }),
        );
      expect((await send()).status).toBe(200);
      const replay = await send();
      expect(replay.status, recorded).toBe(200);
      expect(replay.headers.get(REPLAYED_HEADER)).toBe('true');
      expect(replay.headers.get('content-encoding')).toBe(recorded);
      expect(new Uint8Array(await replay.arrayBuffer())).toEqual(bytes);
      expect(runs()).toBe(1);
    }
  });
});
