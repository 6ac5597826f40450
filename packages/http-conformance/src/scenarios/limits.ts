import { expect } from 'vitest';
import { expectProblem, expectReplayOf, newKey, PROBLEM, type Scenario } from '../kit.js';
import { streamChunk } from '../routes.js';

const group = 'size limits';

/** Request bodies over `maxBodyBytes`, responses over `maxOutcomeBytes`. */
export const LIMIT_SCENARIOS: Scenario[] = [
  {
    group,
    name: 'answers 413 to a body above maxBodyBytes before storing anything',
    options: { maxBodyBytes: 64 },
    async run({ post, calls, spy }) {
      // A JSON body of exactly `bytes` bytes: `{"pad":""}` is 10 of them.
      const padded = (bytes: number) => ({ pad: 'x'.repeat(bytes - 10) });
      // Without a Content-Length (chunked), the bytes themselves are counted.
      for (const chunked of [false, true]) {
        for (const bytes of [200, 65]) {
          expectProblem(
            await post('/charges', { key: newKey(), body: padded(bytes), chunked }),
            413,
            PROBLEM.bodyTooLarge,
          );
        }
      }
      expect(calls('/charges')).toBe(0);
      expect(spy.calls.acquire).toBe(0);
      expect((await post('/charges', { key: newKey(), body: { small: true } })).status).toBe(201);
      // The limit itself is allowed.
      for (const chunked of [false, true]) {
        const at = await post('/charges', { key: newKey(), body: padded(64), chunked });
        expect(at.status, `a body of exactly maxBodyBytes${chunked ? ', chunked' : ''}`).toBe(201);
      }
    },
  },
  {
    group,
    name: 'streams a response over maxOutcomeBytes whole, and answers its retry with a 500 outcome-not-recorded problem, never a second run',
    options: { maxOutcomeBytes: 1_024 },
    async run({ post, calls, events, spy }) {
      const key = newKey();
      const path = '/stream?chunks=4&size=512';
      const first = await post(path, { key, body: {} });
      expect(first.status).toBe(200);
      expect(first.complete).toBe(true);
      const expected = Buffer.concat([0, 1, 2, 3].map((i) => streamChunk(1, i, 512)));
      expect(first.body.equals(expected)).toBe(true);
      expect(events).toContainEqual(
        expect.objectContaining({ type: 'outcome_not_recorded', reason: 'too_large' }),
      );
      expect(spy.calls.release).toBe(0);
      for (let i = 0; i < 2; i++) {
        expectProblem(await post(path, { key, body: {} }), 500, PROBLEM.outcomeNotRecorded);
      }
      expect(calls('/stream')).toBe(1);
      // A response under the cap is still recorded and replayed.
      const small = await post('/charges', { key: newKey(), body: {} });
      expect(small.status).toBe(201);
    },
  },
  {
    group,
    name: 'records and replays a response under maxOutcomeBytes',
    options: { maxOutcomeBytes: 4_096 },
    async run({ post, calls }) {
      const key = newKey();
      const path = '/stream?chunks=4&size=512';
      const first = await post(path, { key, body: {} });
      expectReplayOf(await post(path, { key, body: {} }), first);
      expect(calls('/stream')).toBe(1);
    },
  },
];
