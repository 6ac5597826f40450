import { expect } from 'vitest';
import { expectProblem, expectReplayOf, newKey, PROBLEM, type Scenario } from '../kit.js';

const group = 'fingerprints';

/** Sends `body` as raw bytes of `contentType` to `/charges`. */
const raw = (body: string, contentType: string) => ({
  body: Buffer.from(body, 'utf8'),
  headers: { 'content-type': contentType },
});

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
];
