import { expect } from 'vitest';
import { json } from '../client.js';
import { expectReplayOf, newKey, REPLAYED, type Scenario } from '../kit.js';
import { binaryPayload, RECORDED_HEADER_VALUES, SSE_EVENTS, streamChunk } from '../routes.js';

const group = 'outcomes';
const finalOnceStarted = () => true;

/** What is recorded and replayed: policies, binary bodies, streams, headers. */
export const OUTCOME_SCENARIOS: Scenario[] = [
  {
    group,
    name: 'does not record a throw or a 5xx by default: the retry runs again',
    async run({ post, calls }) {
      const key = newKey();
      for (let attempt = 1; attempt <= 2; attempt++) {
        const thrown = await post('/throws', { key, body: {} });
        expect(thrown.status).toBe(500);
        expect(thrown.headers[REPLAYED]).toBeUndefined();
        expect(calls('/throws')).toBe(attempt);
        const failed = await post('/fails', { key: `${key}-5xx`, body: {} });
        expect(failed.status).toBe(502);
        expect(json(failed)).toMatchObject({ attempt });
      }
    },
  },
  {
    group,
    name: 'does not record a 3xx or a 4xx by default: the retry runs again',
    async run({ post, calls }) {
      const key = newKey();
      let runs = 0;
      for (const status of [303, 404, 429]) {
        for (let attempt = 1; attempt <= 2; attempt++) {
          const answer = await post(`/fails?status=${status}`, {
            key: `${key}-${status}`,
            body: {},
          });
          expect(answer.status).toBe(status);
          expect(answer.headers[REPLAYED]).toBeUndefined();
          expect(calls('/fails'), `runs of a ${status} answer`).toBe(++runs);
        }
      }
    },
  },
  {
    group,
    name: 'replays a 5xx and a throw once started, with a Stripe-like policy',
    options: { isFinal: finalOnceStarted },
    async run({ post, calls }) {
      const key = newKey();
      const failed = await post('/fails', { key, body: {} });
      expectReplayOf(await post('/fails', { key, body: {} }), failed);
      expect(failed.status).toBe(502);
      expect(calls('/fails')).toBe(1);
      const thrown = await post('/throws', { key: `${key}-throw`, body: {} });
      expect(thrown.status).toBe(500);
      expectReplayOf(await post('/throws', { key: `${key}-throw`, body: {} }), thrown);
      expect(calls('/throws')).toBe(1);
    },
  },
  {
    group,
    name: 'replays a binary body byte for byte',
    async run({ post, calls }) {
      const key = newKey();
      const first = await post('/binary', { key, body: Buffer.from([0, 255, 128]) });
      const again = await post('/binary', { key, body: Buffer.from([0, 255, 128]) });
      expect(first.body.equals(Buffer.from(binaryPayload(1)))).toBe(true);
      expectReplayOf(again, first);
      expect(again.headers['content-type']).toBe('application/octet-stream');
      expect(calls('/binary')).toBe(1);
    },
  },
  {
    group,
    name: 'streams a body past 1 MiB whole to its caller and replays it byte for byte',
    async run({ post, calls }) {
      const key = newKey();
      const [count, size] = [17, 65_537];
      const path = `/stream?chunks=${count}&size=${size}`;
      const expected = Buffer.concat(
        Array.from({ length: count }, (_, i) => streamChunk(1, i, size)),
      );
      const first = await post(path, { key, body: {} });
      expect(first.complete).toBe(true);
      expect(first.body.length).toBe(expected.length);
      expect(first.body.equals(expected)).toBe(true);
      expectReplayOf(await post(path, { key, body: {} }), first);
      expect(calls('/stream')).toBe(1);
    },
  },
  {
    group,
    name: 'replays every recorded header as the first answer had it (parameters, lists, dates)',
    async run({ post, calls }) {
      const key = newKey();
      const first = await post('/headers', { key, body: {} });
      expect(first.status).toBe(201);
      for (const name of Object.keys(RECORDED_HEADER_VALUES))
        expect(first.headers[name], `the first answer's ${name}`).toBeDefined();
      const again = await post('/headers', { key, body: {} });
      expectReplayOf(again, first);
      expect(again.headers['x-unrecorded']).toBeUndefined();
      expect(calls('/headers')).toBe(1);
    },
  },
  {
    group,
    name: 'replays a 201 without a body as a 201 without a body',
    async run({ post, calls }) {
      const key = newKey();
      const empty = await post('/empty', { key, body: {} });
      expect([empty.status, empty.body.length]).toEqual([201, 0]);
      expectReplayOf(await post('/empty', { key, body: {} }), empty);
      expect(calls('/empty')).toBe(1);
    },
  },
  {
    group,
    name: 'streams SSE live and replays the same bytes, recorded in the same chunks',
    async run({ post, calls, spy }) {
      const key = newKey();
      // Events 40 ms apart: far more than a loopback write takes to arrive, so a first caller
      // that gets them live sees them as separate chunks.
      const path = '/sse?gap=40';
      const first = await post(path, { key, body: { prompt: 'hi' } });
      const events = first.body.toString('utf8').split('\n\n').filter(Boolean);
      expect(events.map((e) => JSON.parse(e.split('data: ')[1]!).seq)).toEqual([0, 1, 2, 3, 4]);
      // Live: the first caller got the stream as it was made, not in one piece at its end
      // (as a buffering integration or middleware hands it over).
      expect(
        first.chunks.length,
        'chunks of the first SSE response (one: it was buffered, not passed through live)',
      ).toBeGreaterThan(1);
      const again = await post(path, { key, body: { prompt: 'hi' } });
      expectReplayOf(again, first);
      // Not checked: how many chunks the replay arrives in. The recorded chunks are written in
      // one tick, so a reader may get them coalesced (Node 24's fetch does, Node 20's rarely):
      // the promise is the same bytes as a stream, with the recorded boundaries in the store.
      expect(again.headers['content-type']).toBe(first.headers['content-type']);
      expect(again.headers['content-type']).toMatch(/^text\/event-stream/);
      expect(calls('/sse')).toBe(1);
      // What reached the store: one chunk per event, in order.
      expect(spy.completed).toHaveLength(1);
      expect(spy.completed[0]!.meta.chunks).toEqual(
        events.map((e) => Buffer.byteLength(`${e}\n\n`)),
      );
      expect(spy.completed[0]!.meta.chunks).toHaveLength(SSE_EVENTS);
    },
  },
  {
    group,
    name: 'never replays Set-Cookie or headers outside the allowlist',
    async run({ post }) {
      const key = newKey();
      const first = await post('/charges', { key, body: {} });
      const again = await post('/charges', { key, body: {} });
      expect(first.headers['set-cookie']).toEqual(['session=s1; Path=/; HttpOnly']);
      expect(first.headers['x-unrecorded']).toBe('n1');
      expect(again.headers[REPLAYED]).toBe('true');
      expect(again.headers['set-cookie']).toBeUndefined();
      expect(again.headers['x-unrecorded']).toBeUndefined();
      expect(again.headers.location).toBe('/charges/1');
    },
  },
];
