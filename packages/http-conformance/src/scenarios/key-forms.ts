import { expect } from 'vitest';
import { expectProblem, expectReplayOf, newKey, PROBLEM, REPLAYED, type Scenario } from '../kit.js';

const group = 'key forms';

/** The `Idempotency-Key` field: invalid keys, Structured Field forms, repeated fields. */
export const KEY_FORM_SCENARIOS: Scenario[] = [
  {
    group,
    name: 'answers 400 to missing, empty, too long, non-ASCII and badly quoted keys, storing nothing',
    async run({ post, calls, spy }) {
      expectProblem(await post('/charges', { body: { a: 1 } }), 400, PROBLEM.missingKey);
      // A POST without a body needs its key as much as one with a body.
      const noBody = { 'content-length': '0' };
      expectProblem(await post('/charges', { headers: noBody }), 400, PROBLEM.missingKey);
      for (const bad of [
        '',
        '""',
        'x'.repeat(256),
        'cl\u00e9',
        '"abc',
        '"a\\x"',
        '"ab"c',
        'a"b',
        '"tab\there"',
        'one, two',
      ]) {
        expectProblem(
          await post('/charges', { key: bad, body: { a: 1 } }),
          400,
          PROBLEM.invalidKey,
        );
      }
      expect(calls('/charges')).toBe(0);
      expect(spy.calls.acquire).toBe(0);
      expect((await post('/charges', { key: 'x'.repeat(255), body: { a: 1 } })).status).toBe(201);
    },
  },
  {
    group,
    name: 'keeps apart keys that differ only in letter case, or only in the last of 255 characters',
    async run({ post, calls }) {
      const key = newKey();
      const long = key.padEnd(254, 'x');
      const body = { amount: 4 };
      let runs = 0;
      for (const [one, other] of [
        [key, key.toUpperCase()],
        [`${long}a`, `${long}b`],
      ] as const) {
        const first = await post('/charges', { key: one, body });
        const second = await post('/charges', { key: other, body });
        expect([first.status, second.status]).toEqual([201, 201]);
        expect(second.headers[REPLAYED], `${other} got the answer of ${one}`).toBeUndefined();
        expectReplayOf(await post('/charges', { key: other, body }), second);
        runs += 2;
        expect(calls('/charges')).toBe(runs);
      }
    },
  },
  {
    group,
    name: 'takes the quoted and the bare form of one key, escapes and every RFC 8941 parameter form as the same key',
    async run({ post, calls }) {
      const key = newKey();
      const body = { amount: 3 };
      const first = await post('/charges', { key: `"${key}"`, body });
      expect(first.status).toBe(201);
      for (const form of [
        key,
        `"${key}";p=:aGk=:`,
        `"${key}";p`,
        `"${key}";a=1;b=?0;c=tok/en;d="s \\" q";e=-1.5;f=::`,
        `"${key}"; p=1`,
      ]) {
        expectReplayOf(await post('/charges', { key: form, body }), first);
      }
      const escaped = await post('/charges', { key: '"a\\"b\\\\c"', body });
      expect(escaped.status).toBe(201);
      expectReplayOf(await post('/charges', { key: '"a\\"b\\\\c";x', body }), escaped);
      expect(calls('/charges')).toBe(2);
    },
  },
  {
    group,
    name: 'answers 400 to malformed parameters after a quoted key',
    async run({ post, calls, spy }) {
      const key = newKey();
      for (const bad of [`"${key}";p=?2`, `"${key}";P=1`, `"${key}";p=:a$b:`, `"${key}";p=`]) {
        expectProblem(await post('/charges', { key: bad, body: {} }), 400, PROBLEM.invalidKey);
      }
      expect(calls('/charges')).toBe(0);
      expect(spy.calls.acquire).toBe(0);
    },
  },
  {
    group,
    name: 'answers 400 to a repeated Idempotency-Key header rather than picking one',
    async run({ post, calls, spy }) {
      const key = newKey();
      for (const repeated of [
        [key, `${key}-2`],
        [`"${key}"`, `"${key}-2"`],
        [key, key],
        [`"${key}"`, `"${key}"`],
      ]) {
        expectProblem(await post('/charges', { key: repeated, body: {} }), 400, PROBLEM.invalidKey);
      }
      expect(calls('/charges')).toBe(0);
      expect(spy.calls.acquire).toBe(0);
    },
  },
];
