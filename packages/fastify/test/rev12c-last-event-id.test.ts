/**
 * rev12c (adversarial review of 94a3db0/9ce9ee9): Fastify reads `Last-Event-ID` from Node's
 * IncomingMessage (a byte string); @idem/http decodes it by UTF-8. Requests sent with
 * node:http so that the header bytes are exactly the ones given.
 */
import { request as httpRequest } from 'node:http';
import { createMemoryStore } from '@idem/store-memory';
import Fastify from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

const IDS = ['事件-1', 'é-2', '😀-3', '\u0080-4', 'Ã©-5', 'plain-6'];
const events = IDS.map((id, i) => `id: ${id}\ndata: ${i}\n\n`);
/** A header value holding `bytes`, one Latin-1 character a byte. */
const byteString = (bytes: Uint8Array | number[]) => Buffer.from(bytes).toString('latin1');
const utf8Header = (id: string) => byteString(Buffer.from(id, 'utf8'));

let url = '';
let runs = 0;

function post(key: string, headers: Record<string, string> = {}) {
  return new Promise<{ status: number; body: string }>((resolve, reject) => {
    const req = httpRequest(`${url}/stream`, {
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
    req.end(Buffer.from('{}'));
  });
}

const tests = (name: string) =>
  describe(`rev12c ${name}: Last-Event-ID bytes on a real server`, () => {
    it('held: UTF-8 ids (CJK, é, emoji, U+0080, "Ã©") each resume after their own event, one execution', async () => {
      const before = runs;
      expect((await post('k1')).body).toBe(events.join(''));
      for (let i = 0; i < IDS.length; i++) {
        const resumed = await post('k1', {
          'last-event-id': utf8Header(IDS[i] as string),
          'idempotent-generation': '1',
        });
        expect([resumed.status, resumed.body]).toEqual([200, events.slice(i + 1).join('')]);
      }
      expect(runs).toBe(before + 1);
    });

    it('held: raw Latin-1 é, a cut sequence and a UTF-8 surrogate: 412 unknown-event-id, nothing run; also on a free key', async () => {
      const before = runs;
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
      expect(runs).toBe(before + 1);
    });

    it('held: Last-Event-ID with spaces around a UTF-8 id (HTTP trims them) resumes after the id', async () => {
      const before = runs;
      await post('k4');
      const resumed = await post('k4', {
        'last-event-id': ` ${utf8Header('é-2')}\t`,
        'idempotent-generation': '1',
      });
      expect([resumed.status, resumed.body]).toEqual([200, events.slice(2).join('')]);
      expect(runs).toBe(before + 1);
    });
  });

const app = Fastify();
beforeAll(async () => {
  await app.register(idempotency, {
    store: createMemoryStore(),
    scope: 'global',
    onWarning: () => {},
  });
  app.post('/stream', async (_request, reply) => {
    runs++;
    reply.hijack();
    reply.raw.writeHead(200, { 'content-type': 'text/event-stream' });
    for (const event of events) reply.raw.write(event);
    reply.raw.end();
  });
  url = await app.listen({ port: 0, host: '127.0.0.1' });
});
afterAll(() => app.close());

tests('Fastify');
