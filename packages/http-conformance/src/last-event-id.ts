import { request as httpRequest } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

/**
 * An app for {@link describeLastEventIdBytes}, listening on loopback: `POST /stream` answers
 * 200 `text/event-stream` with {@link LAST_EVENT_ID_EVENTS} (each event with its id), behind
 * the adapter's middleware with `scope: 'global'`, counting the runs of its handler.
 */
export interface LastEventIdApp {
  /** Base URL, `http://127.0.0.1:port`. */
  url: string;
  /** Handler runs so far. */
  runs(): number;
  close(): unknown;
}

const IDS = ['事件-1', 'é-2', '😀-3', '\u0080-4', 'Ã©-5', 'plain-6'];

/** The events `POST /stream` answers with, in order: ids past ASCII and one that is. */
export const LAST_EVENT_ID_EVENTS: readonly string[] = IDS.map(
  (id, i) => `id: ${id}\ndata: ${i}\n\n`,
);

/** A header value holding `bytes`, one Latin-1 character a byte. */
const byteString = (bytes: Uint8Array | number[]) => Buffer.from(bytes).toString('latin1');
const utf8Header = (id: string) => byteString(Buffer.from(id, 'utf8'));

/**
 * Registers tests that an adapter hands `Last-Event-ID` to `@idem/http` as the bytes that were
 * sent (as Node and Fetch `Headers` give them, one byte a character), which reads them by
 * UTF-8, as EventSource and `@idem/client` send ids: every id resumes after its own event,
 * bytes that are not UTF-8 get 412 `unknown-event-id` with nothing run, and the spaces HTTP
 * trims do not matter. Requests go through node:http so that the header bytes are exactly
 * the ones given.
 */
export function describeLastEventIdBytes(name: string, start: () => Promise<LastEventIdApp>): void {
  describe(`${name}: Last-Event-ID bytes on a real server`, () => {
    let app: LastEventIdApp;
    beforeAll(async () => {
      app = await start();
    });
    afterAll(() => app.close());

    const post = (key: string, headers: Record<string, string> = {}) =>
      new Promise<{ status: number; body: string }>((resolve, reject) => {
        const req = httpRequest(`${app.url}/stream`, {
          method: 'POST',
          headers: { 'idempotency-key': key, 'content-type': 'application/json', ...headers },
        });
        req.on('response', (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (chunk: Buffer) => chunks.push(chunk));
          res.on('end', () =>
            resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }),
          );
          res.on('error', reject);
        });
        req.on('error', reject);
        // A Buffer body: with a string, node:http sends the head as UTF-8 too, encoding the
        // header's bytes twice.
        req.end(Buffer.from('{}'));
      });
    const events = LAST_EVENT_ID_EVENTS;

    it('UTF-8 ids (CJK, é, emoji, U+0080, "Ã©") each resume after their own event, one execution', async () => {
      const before = app.runs();
      expect((await post('k1')).body).toBe(events.join(''));
      for (let i = 0; i < IDS.length; i++) {
        const resumed = await post('k1', {
          'last-event-id': utf8Header(IDS[i] as string),
          'idempotent-generation': '1',
        });
        expect([resumed.status, resumed.body]).toEqual([200, events.slice(i + 1).join('')]);
      }
      expect(app.runs()).toBe(before + 1);
    });

    it('raw Latin-1 é, a cut sequence and a UTF-8 surrogate: 412 unknown-event-id, nothing run; also on a free key', async () => {
      const before = app.runs();
      await post('k2');
      for (const bytes of [
        [0xe9, 0x2d, 0x32],
        [0xe4, 0xba],
        [0xed, 0xa0, 0x80],
      ]) {
        const answer = await post('k2', {
          'last-event-id': byteString(bytes),
          'idempotent-generation': '1',
        });
        expect(answer.status).toBe(412);
        expect(JSON.parse(answer.body)).toMatchObject({ status: 412 });
      }
      const free = await post('k3', { 'last-event-id': byteString([0xe9]) });
      expect(free.status).toBe(412);
      expect(app.runs()).toBe(before + 1);
    });

    it('spaces around a UTF-8 id (HTTP trims them) resume after the id', async () => {
      const before = app.runs();
      await post('k4');
      const resumed = await post('k4', {
        'last-event-id': ` ${utf8Header('é-2')}\t`,
        'idempotent-generation': '1',
      });
      expect([resumed.status, resumed.body]).toEqual([200, events.slice(2).join('')]);
      expect(app.runs()).toBe(before + 1);
    });
  });
}
