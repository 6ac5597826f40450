import { expect } from 'vitest';
import { expectProblem, expectReplayOf, newKey, PROBLEM, REPLAYED, type Scenario } from '../kit.js';

const group = 'fingerprints';

/** Sends `body` as raw bytes of `contentType` to `/charges`. */
const raw = (body: string, contentType: string) => ({
  body: Buffer.from(body, 'utf8'),
  headers: { 'content-type': contentType },
});

/** A `multipart/form-data` body of `fields` (name → text, or a file), under `boundary`. */
export function multipartForm(
  boundary: string,
  fields: [name: string, value: string | { filename: string; type: string; content: Buffer }][],
) {
  const parts = fields.map(([name, value]) =>
    typeof value === 'string'
      ? Buffer.from(`content-disposition: form-data; name="${name}"\r\n\r\n${value}`)
      : Buffer.concat([
          Buffer.from(
            `content-disposition: form-data; name="${name}"; filename="${value.filename}"\r\n` +
              `content-type: ${value.type}\r\n\r\n`,
          ),
          value.content,
        ]),
  );
  return {
    body: Buffer.concat([
      ...parts.flatMap((part) => [Buffer.from(`--${boundary}\r\n`), part, Buffer.from('\r\n')]),
      Buffer.from(`--${boundary}--\r\n`),
    ]),
    headers: { 'content-type': `multipart/form-data; boundary=${boundary}` },
  };
}

/** Bytes a file part carries: every byte value, CR LF and a line like a boundary included. */
const fileContent = (seed: number) =>
  Buffer.concat([
    Buffer.from(Array.from({ length: 256 }, (_, i) => (i + seed) & 0xff)),
    Buffer.from('\r\n--not-the-boundary\r\n'),
  ]);

const form = (boundary: string, note: string, seed = 0, filename = 'a.bin') =>
  multipartForm(boundary, [
    ['note', note],
    ['file', { filename, type: 'application/octet-stream', content: fileContent(seed) }],
  ]);

/**
 * Two different requests under one key never share a fingerprint (the second would get the
 * first one's response instead of a 422), while one request spelled two ways still replays.
 * (Which JSON spellings are "one request" depends on what the app sees: a framework that
 * hands its handlers `JSON.parse`'s value may fingerprint that value, so the suite does not
 * require a 422 for bodies that only differ in what `JSON.parse` drops.)
 */
export const FINGERPRINT_SCENARIOS: Scenario[] = [
  {
    group,
    name: 'replays one JSON body spelled two ways (member order, spacing, number spelling, escapes)',
    async run({ post, calls }) {
      const key = newKey();
      const json = 'application/json';
      const first = await post('/charges', { key, ...raw('{"a":1.50,"b":[1,2],"c":"A"}', json) });
      expect(first.status).toBe(201);
      const again = await post('/charges', {
        key,
        ...raw('{ "c": "\\u0041", "b": [1, 2], "a": 1.5 }', `${json}; charset=utf-8`),
      });
      expectReplayOf(again, first);
      expect(calls('/charges')).toBe(1);
    },
  },
  {
    group,
    name: 'answers 422 to other bytes of a body that is neither JSON nor a form (octet-stream, text), and replays the same bytes',
    async run({ post, calls }) {
      let runs = 0;
      for (const type of ['application/octet-stream', 'text/plain']) {
        const key = newKey();
        const first = await post('/charges', { key, ...raw('amount=5', type) });
        expect(first.status).toBe(201);
        runs++;
        expectReplayOf(await post('/charges', { key, ...raw('amount=5', type) }), first);
        const other = await post('/charges', { key, ...raw('amount=6', type) });
        expectProblem(other, 422, PROBLEM.keyReused);
        expect(calls('/charges'), type).toBe(runs);
      }
    },
  },
  {
    group,
    name: 'never answers a request with the outcome of another query string or method under its key: 422, or a run of its own',
    async run({ post, calls }) {
      const key = newKey();
      const body = { amount: 7 };
      expect((await post('/charges?ref=a', { key, body })).status).toBe(201);
      let runs = 1;
      for (const [method, path] of [
        ['POST', '/charges?ref=b'],
        ['PATCH', '/charges?ref=a'],
      ] as const) {
        const answer = await post(path, { key, body, method });
        expect(
          answer.headers[REPLAYED],
          `${method} ${path} got the answer of POST /charges?ref=a`,
        ).toBeUndefined();
        if (answer.status === 422) expectProblem(answer, 422, PROBLEM.keyReused);
        else {
          expect(answer.status).toBe(201);
          runs++;
        }
        expect(calls('/charges')).toBe(runs);
      }
    },
  },
  {
    group,
    name: 'answers 422 to the same bytes sent as another media type',
    async run({ post, calls }) {
      const key = newKey();
      const first = await post('/charges', { key, ...raw('amount=5', 'text/plain') });
      expect(first.status).toBe(201);
      const reused = await post('/charges', {
        key,
        ...raw('amount=5', 'application/octet-stream'),
      });
      expectProblem(reused, 422, PROBLEM.keyReused);
      expect(calls('/charges')).toBe(1);
    },
  },
  {
    group,
    name: 'replays the retry of a multipart form encoded with another boundary, and answers 422 to a changed field, file name or file',
    async run({ post, calls }) {
      const key = newKey();
      const first = await post('/charges', { key, ...form('----one0123', 'hi') });
      expect(first.status).toBe(201);
      // What a client that encodes the form anew sends: a fresh random boundary.
      expectReplayOf(await post('/charges', { key, ...form('x-two-Zq9', 'hi') }), first);
      for (const changed of [
        form('three', 'hi!'),
        form('three', 'hi', 1),
        form('three', 'hi', 0, 'b.bin'),
        multipartForm('three', [['note', 'hi']]),
      ]) {
        expectProblem(await post('/charges', { key, ...changed }), 422, PROBLEM.keyReused);
      }
      expect(calls('/charges')).toBe(1);
    },
  },
  {
    group,
    name: 'answers 400 malformed-body to a multipart body that does not parse, and runs nothing',
    async run({ post, calls }) {
      for (const bad of [
        // No closing boundary.
        {
          body: Buffer.from('--b\r\ncontent-disposition: form-data; name="a"\r\n\r\n1'),
          type: 'b',
        },
        // No boundary parameter.
        { body: form('b', 'hi').body, type: undefined },
        // Another boundary than the one declared.
        { body: form('b', 'hi').body, type: 'c' },
      ]) {
        const contentType = `multipart/form-data${bad.type ? `; boundary=${bad.type}` : ''}`;
        const answer = await post('/charges', {
          key: newKey(),
          body: bad.body,
          headers: { 'content-type': contentType },
        });
        expectProblem(answer, 400, PROBLEM.malformedBody);
      }
      expect(calls('/charges')).toBe(0);
    },
  },
];
