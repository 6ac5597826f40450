import { fetchDriver, type RunningApp, send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PROBLEM_TYPES, REPLAYED_HEADER, withIdempotency } from '../src/index.js';

// Two different requests under one key must never share a fingerprint: the second would get
// the first one's response as a replay instead of a 422. A hostile or careless client finds
// such pairs where parsing loses information. Equal requests spelled differently still replay.

let app: RunningApp;
let runs = 0;
let seq = 0;

beforeAll(async () => {
  const handler = withIdempotency(
    async (request) => {
      runs++;
      return new Response(`ran with ${await request.text()}`, { status: 201 });
    },
    { store: createMemoryStore(), scope: 'global', onWarning: () => {} },
  );
  app = await fetchDriver(() => handler).start({ options: {} as never, routes: new Map() });
});

afterAll(() => app.close());

async function pair(first: [string, string], second: [string, string]) {
  const key = `fp-${++seq}`;
  const sendOne = ([contentType, body]: [string, string]) =>
    send(app.url, '/orders', {
      key,
      body: Buffer.from(body, 'utf8'),
      headers: { 'content-type': contentType },
    });
  const a = await sendOne(first);
  const b = await sendOne(second);
  expect(a.status).toBe(201);
  return b;
}

const JSON_TYPE = 'application/json';

describe('fingerprints of JSON bodies that JSON.parse makes look alike', () => {
  it.each<[string, string, string]>([
    ['a decimal past double precision', '{"amount":0.30000000000000001}', '{"amount":0.3}'],
    [
      'two decimals of one double',
      '{"amount":12345678.1234567891}',
      '{"amount":12345678.123456789}',
    ],
    ['a number that underflows to 0', '{"amount":1e-400}', '{"amount":0}'],
    ['a duplicate name', '{"amount":1,"amount":1000}', '{"amount":1000}'],
    ['a nested duplicate name', '{"to":{"id":"a","id":"b"}}', '{"to":{"id":"b"}}'],
    ['a duplicate name spelled with an escape', '{"a":1,"\\u0061":2}', '{"a":2}'],
  ])('%s: 422, not a replay', async (_name, first, second) => {
    const before = runs;
    const again = await pair([JSON_TYPE, first], [JSON_TYPE, second]);
    expect(again.status).toBe(422);
    expect(JSON.parse(again.body.toString('utf8'))).toMatchObject({
      type: PROBLEM_TYPES.keyReused,
    });
    expect(runs - before).toBe(1);
  });

  it.each<[string, string, string]>([
    ['key order and spacing', '{"a":1,"b":[1,2]}', '{ "b": [1, 2], "a": 1 }'],
    ['number spellings of one value', '{"a":1.50,"b":1e2,"c":-0}', '{"a":1.5,"b":100,"c":0}'],
    ['escapes of one string', '{"a":"\\u0041\\/"}', '{"a":"A/"}'],
    ['the same name in two objects', '{"x":{"id":1},"y":{"id":1}}', '{"y":{"id":1},"x":{"id":1}}'],
  ])('%s: still a replay', async (_name, first, second) => {
    const before = runs;
    const again = await pair([JSON_TYPE, first], [JSON_TYPE, second]);
    expect(again.status).toBe(201);
    expect(again.headers[REPLAYED_HEADER]).toBe('true');
    expect(runs - before).toBe(1);
  });
});

describe('fingerprints and the media type of the body', () => {
  it.each<[string, [string, string], [string, string]]>([
    [
      'merge patch vs JSON patch',
      ['application/merge-patch+json', '[]'],
      ['application/json-patch+json', '[]'],
    ],
    ['text vs bytes', ['text/plain', 'a=1'], ['application/octet-stream', 'a=1']],
    ['form vs text', ['application/x-www-form-urlencoded', 'a=1'], ['text/plain', 'a=1']],
    // A parser after the middleware decodes the same bytes by the charset: another request.
    [
      'UTF-8 vs ISO-8859-1 text',
      ['text/plain; charset=utf-8', 'café'],
      ['text/plain; charset=iso-8859-1', 'café'],
    ],
    [
      'no charset vs ISO-8859-1 form',
      ['application/x-www-form-urlencoded', 'a=b'],
      ['application/x-www-form-urlencoded; charset=latin1', 'a=b'],
    ],
    [
      'ISO-8859-1 vs Windows-1252',
      ['text/plain; charset=iso-8859-1', 'x'],
      ['text/plain; charset=windows-1252', 'x'],
    ],
    [
      'one charset vs two',
      ['text/plain; charset=latin1', 'x'],
      ['text/plain; charset=latin1; charset=utf-8', 'x'],
    ],
    [
      'parameters that parse vs ones that do not',
      ['text/plain; charset=latin1', 'x'],
      ['text/plain; charset=latin1; x', 'x'],
    ],
  ])('the same bytes as %s: 422', async (_name, first, second) => {
    const again = await pair(first, second);
    expect(again.status).toBe(422);
  });

  it('charset, case and spacing of one media type: still a replay', async () => {
    const again = await pair(
      ['application/json', '{"a":1}'],
      ['Application/JSON ; charset=UTF-8', '{"a":1}'],
    );
    expect(again.headers[REPLAYED_HEADER]).toBe('true');
  });

  it.each<[string, string, string]>([
    ['no charset and utf-8', 'text/plain', 'text/plain;charset=utf-8'],
    ['utf8, quoted, spaced', 'text/plain; charset=UTF-8', 'text/plain; charset = "utf8"'],
    [
      'another charset in another case',
      'text/plain; charset=ISO-8859-1',
      'TEXT/plain;Charset="iso-8859-1"',
    ],
    [
      'another parameter',
      'text/plain; charset=latin1',
      'text/plain; format=flowed; charset=latin1',
    ],
  ])('%s: still a replay', async (_name, first, second) => {
    const again = await pair([first, 'x'], [second, 'x']);
    expect(again.headers[REPLAYED_HEADER]).toBe('true');
  });
});
