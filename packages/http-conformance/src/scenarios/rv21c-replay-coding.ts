import { expect } from 'vitest';
import { expectProblem, newKey, PROBLEM, REPLAYED, type Scenario } from '../kit.js';
import { CODED_TEXT } from '../routes.js';

// rv21c (adversarial review, on every integration): a replay's recorded Content-Encoding
// against the retry's Accept-Encoding, and the recorded CORS fields against its Origin.

const group = 'replay coding and CORS';

export const REPLAY_CODING_SCENARIOS: Scenario[] = [
  {
    group,
    name: 'a gzip body replays decoded (own length, weak ETag) to a retry that refuses gzip, as recorded to one that takes it',
    async run({ post, calls }) {
      const key = newKey();
      const gzip = { 'accept-encoding': 'gzip' };
      const first = await post('/coded', { key, headers: gzip });
      expect([first.status, first.headers['content-encoding']]).toEqual([201, 'gzip']);
      for (const refusing of ['identity', 'gzip;q=0', 'br', '']) {
        const decoded = await post('/coded', { key, headers: { 'accept-encoding': refusing } });
        expect(decoded.status).toBe(201);
        expect(decoded.headers[REPLAYED]).toBe('true');
        expect(decoded.headers['content-encoding']).toBeUndefined();
        expect(decoded.body.toString('utf8')).toBe(CODED_TEXT);
        const length = decoded.headers['content-length'];
        if (length !== undefined) expect(length).toBe(String(Buffer.byteLength(CODED_TEXT)));
        expect(decoded.headers.etag).toBe('W/"coded"');
        expect(decoded.headers.vary).toMatch(/accept-encoding/i);
        // Added to the recorded Vary, not in its place.
        expect(decoded.headers.vary).toMatch(/accept-language/i);
      }
      const again = await post('/coded', { key, headers: gzip });
      expect(again.headers['content-encoding']).toBe('gzip');
      expect(again.headers.vary).toMatch(/accept-language/i);
      expect(again.body.equals(first.body)).toBe(true);
      expect(calls('/coded')).toBe(1);
    },
  },
  {
    group,
    name: 'seven stacked codings: 406 to a retry that refuses them, never decoded layer by layer; as recorded to one that takes gzip',
    async run({ post, calls }) {
      const key = newKey();
      const first = await post('/coded?layers=7', { key, headers: { 'accept-encoding': 'gzip' } });
      expect(first.status).toBe(201);
      const refused = await post('/coded?layers=7', {
        key,
        headers: { 'accept-encoding': 'identity' },
      });
      expectProblem(refused, 406, PROBLEM.codingNotAcceptable);
      const again = await post('/coded?layers=7', { key, headers: { 'accept-encoding': 'gzip' } });
      expect(again.body.equals(first.body)).toBe(true);
      expect(calls('/coded')).toBe(1);
    },
  },
  {
    group,
    name: 'CORS fields of the first answer replay to a retry from the same Origin only',
    async run({ post, calls }) {
      const key = newKey();
      const path = '/coded?allow=https%3A%2F%2Fapp.example';
      const from = (origin?: string) =>
        post(path, {
          key,
          headers: { 'accept-encoding': 'gzip', ...(origin === undefined ? {} : { origin }) },
        });
      const first = await from('https://app.example');
      expect(first.headers['access-control-allow-origin']).toBe('https://app.example');
      for (const origin of ['https://evil.example', 'https://APP.example', 'null', undefined]) {
        const other = await from(origin);
        expect(other.headers[REPLAYED]).toBe('true');
        expect(other.headers['access-control-allow-origin'], String(origin)).toBeUndefined();
        expect(other.headers['access-control-allow-credentials']).toBeUndefined();
        expect(other.headers.vary).toMatch(/origin/i);
      }
      const same = await from('https://app.example');
      expect(same.headers['access-control-allow-origin']).toBe('https://app.example');
      expect(same.headers['access-control-allow-credentials']).toBe('true');
      expect(calls('/coded')).toBe(1);
    },
  },
];
