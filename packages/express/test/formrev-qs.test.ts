import { randomUUID } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import { type Exchange, listening, send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import express from 'express';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { timedOnCpu } from '../../../scripts/loop-lateness.js';
import { idempotency } from '../src/index.js';

// formrev: attacks on cc288e5 (a parsed urlencoded form holding a '%' is refused as decoded).
// checkForm's comment claims "The rule that makes two different forms never decode alike is
// any '%'": a name or value without '%' was decoded whole, so forms that decode alike "only
// spell the same text differently". qs (express.urlencoded, extended or not; NestJS on
// Express) drops text without any '%' involved: a pair with an empty name, the text after a
// closing bracket, an array index. Two different bodies then parse alike and the second is
// replayed the first's outcome instead of 422. Real Express on loopback, idem after the parser.
// formfix: every object parsed from a Content-Type that is not JSON is now refused (500)
// unless req.rawBody keeps the bytes (then they are fingerprinted first, for every type);
// the findings below are fixed so, and the held cases run on /kept (bytes kept) or /before
// (idem before the parser, the recommended setup).

const FORM = 'application/x-www-form-urlencoded';

let url = '';
let close: () => Promise<void> = async () => {};
let runs = 0;
const errors: Error[] = [];

beforeAll(async () => {
  const app = express();
  app.use('/ext', express.urlencoded({ extended: true }));
  app.use('/simple', express.urlencoded({ extended: false }));
  // charsetSentinel is a body-parser 2 option its types do not list yet.
  const sentinel = { extended: true, charsetSentinel: true } as Parameters<
    typeof express.urlencoded
  >[0];
  app.use('/sentinel', express.urlencoded(sentinel));
  app.use('/anytype', express.urlencoded({ extended: true, type: '*/*' }));
  app.use('/text', express.text());
  app.use('/json', express.json());
  app.use(
    '/kept',
    express.urlencoded({
      extended: true,
      verify: (req, _res, buf) => {
        (req as unknown as { rawBody: Buffer }).rawBody = Buffer.from(buf);
      },
    }),
  );
  app.use(
    '/big',
    express.urlencoded({
      extended: true,
      limit: '8mb',
      parameterLimit: 1e6,
      verify: (req, _res, buf) => {
        (req as unknown as { rawBody: Buffer }).rawBody = Buffer.from(buf);
      },
    }),
  );
  app.use(idempotency({ store: createMemoryStore(), scope: 'global', onWarning: () => {} }));
  const route = (req: express.Request, res: express.Response) => {
    runs++;
    res.status(201).json({ run: runs, body: req.body });
  };
  app.post(['/ext', '/simple', '/kept', '/sentinel', '/anytype', '/text', '/json', '/big'], route);
  // The recommended setup: idem (mounted above for every path) before the form parser.
  app.post('/before', express.urlencoded({ extended: true }), route);
  app.use(
    (error: Error, _req: express.Request, res: express.Response, _next: express.NextFunction) => {
      errors.push(error);
      // A parser's own 4xx (413 too many parameters, 400 depth) as it is; anything else 500.
      const status = (error as { status?: number }).status ?? 500;
      res.status(status).json({ name: error.name, message: error.message });
    },
  );
  const running = await listening(app.listen(0, '127.0.0.1'));
  url = running.url;
  close = running.close;
});
afterAll(() => close());

const post = (
  path: string,
  key: string,
  body: string | Buffer,
  type = FORM,
  headers: Record<string, string> = {},
  timeoutMs?: number,
): Promise<Exchange> =>
  send(url, path, {
    key,
    body: typeof body === 'string' ? Buffer.from(body) : body,
    headers: { 'content-type': type, ...headers },
    ...(timeoutMs === undefined ? {} : { timeoutMs }),
  });

/** The first body runs (201); the other under the same key must be 422, never a replay. */
async function expectTold(path: string, one: string | Buffer, two: string | Buffer, type = FORM) {
  const key = randomUUID();
  const before = runs;
  const first = await post(path, key, one, type);
  expect(first.status).toBe(201);
  expect(runs).toBe(before + 1);
  const other = await post(path, key, two, type);
  expect(other.headers['idempotent-replayed']).toBeUndefined();
  expect(other.status).toBe(422);
  expect(runs).toBe(before + 1);
}

/** formfix: a parsed form without its bytes is refused (500, nothing run, never replayed). */
async function expectRefused(path: string, one: string, two: string, type = FORM) {
  const key = randomUUID();
  const before = runs;
  const first = await post(path, key, one, type);
  const other = await post(path, key, two, type);
  expect([first.status, other.status]).toEqual([500, 500]);
  expect(other.headers['idempotent-replayed']).toBeUndefined();
  const problem = JSON.parse(other.body.toString());
  expect(problem.name).toBe('BodyAlreadyReadError');
  expect(problem.message).toMatch(/parsed into names and values/);
  expect(problem.message).toMatch(/mount the middleware before the body parser/);
  expect(runs).toBe(before);
}

/** Shows the collision itself: both parse alike (asserted through the echo of req.body). */
async function parsedAlike(path: string, one: string, two: string, type = FORM) {
  const a = await post(path, randomUUID(), one, type);
  const b = await post(path, randomUUID(), two, type);
  expect(JSON.parse(a.body.toString()).body).toEqual(JSON.parse(b.body.toString()).body);
}

describe('formrev: forms qs parses alike without any % (express.urlencoded before idem)', () => {
  it('setup: the pairs below really parse alike through body-parser', async () => {
    await parsedAlike('/ext', 'amount=10&=1', 'amount=10&=9999');
    await parsedAlike('/simple', 'amount=10&=1', 'amount=10&=9999');
    await parsedAlike('/ext', 'refund[amount]x=10', 'refund[amount]y=10');
    await parsedAlike('/ext', 'to[7]=alice', 'to[0]=alice');
  });

  // FINDING (MEDIUM, isolation): qs drops a pair whose name is empty ("=x", "&=x"), extended
  // or not, with no '%' anywhere: `amount=10&=1` and `amount=10&=9999` both parse to
  // { amount: '10' }, so the second body under the key is replayed the first's outcome.
  // Fix: do not fingerprint a parsed application/x-www-form-urlencoded object at all (refuse
  // it as decoded, as a '%' is now, unless req.rawBody is a Buffer): qs's losses are not
  // limited to '%' (see the next findings and the Koa/Nest files), and no check over the
  // parsed object can see what was dropped. Or document forms as "mount before the parser".
  it('Was FINDING (MEDIUM), fixed: extended, an empty name with different values: refused, never replayed', async () => {
    await expectRefused('/ext', 'amount=10&=1', 'amount=10&=9999');
  });
  it('Was FINDING (MEDIUM), fixed: not extended (express.urlencoded() default): likewise refused', async () => {
    await expectRefused('/simple', 'amount=10&=1', 'amount=10&=9999');
  });

  // FINDING (MEDIUM, isolation; the remedy does not remedy): with the bytes kept as
  // req.rawBody (a Buffer, through verify: what the README says to do), nodeRequestBody still
  // fingerprints the parsed form whenever it is not refused: the empty-name pair collides.
  // Fix: when req.rawBody is a Buffer, fingerprint it (bodyFromBytes) rather than the parsed
  // body, at least for non-JSON types (JSON too: its repeated names would then be told apart).
  it('Was FINDING (MEDIUM), fixed: verify keeps req.rawBody: the bytes are fingerprinted first, an empty name with different values is 422', async () => {
    await expectTold('/kept', 'amount=10&=1', 'amount=10&=9999');
    await expectTold('/kept', 'refund[amount]x=10', 'refund[amount]y=10');
    await expectTold('/kept', 'to[7]=alice', 'to[0]=alice');
  });

  // FINDING (MEDIUM, isolation): qs (extended) drops the text after a closing bracket:
  // `refund[amount]x=10` and `refund[amount]y=10` (any text, `a[b]c`, `[a]zzz`, `a[]b`)
  // both parse to { refund: { amount: '10' } }: replayed instead of 422. Fix as above.
  it('Was FINDING (MEDIUM), fixed: extended, text after a closing bracket: refused, never replayed', async () => {
    await expectRefused('/ext', 'refund[amount]x=10', 'refund[amount]y=10');
  });
  it('Was FINDING (MEDIUM), fixed: extended, a name starting with a bracket: refused, never replayed', async () => {
    await expectRefused('/ext', '[amount]10=1', '[amount]99=1');
  });

  // FINDING (LOW, isolation): qs compacts sparse arrays: the index is dropped, so `to[7]=alice`
  // and `to[0]=alice` (or `to[]=alice`) parse alike; likewise `a=1&a=2` and `a[]=1&a[]=2`
  // (aliases the app cannot tell apart either, but different bodies by the contract and not
  // mere escapes as checkForm's comment has it). Fix as above.
  it('Was FINDING (LOW), fixed: extended, an array index: refused, never replayed', async () => {
    await expectRefused('/ext', 'to[7]=alice', 'to[0]=alice');
  });

  // FINDING (LOW, opt-in option): with charsetSentinel: true, qs drops any `utf8=` pair
  // whatever its value (it is meant for `utf8=✓`): `utf8=x&a=1` and `utf8=y&a=1` both parse to
  // { a: '1' }. Fix as above.
  it('Was FINDING (LOW), fixed: charsetSentinel, a utf8= pair with another value: refused, never replayed', async () => {
    await expectRefused('/sentinel', 'utf8=x&amount=10', 'utf8=y&amount=10');
  });

  // FINDING (MEDIUM, configuration; the author's open item confirmed): a form parser that
  // also parses other Content-Types (`type: '*/*'`, or a list) decodes `a=%FF` and `a=%25FF`
  // alike under `text/plain`, where checkForm (which looks at the Content-Type only) does not
  // apply: replayed. Fix: apply the '%' rule to any parsed object (not a string, Buffer or a
  // JSON type's value) whatever the Content-Type, or refuse parsed objects of non-JSON types.
  it('Was FINDING (MEDIUM), fixed: type */*, a form sent as text/plain (%FF and %25FF): refused (decided by the parsed object)', async () => {
    await expectRefused('/anytype', 'a=%FF', 'a=%25FF', 'text/plain');
  });
  it('Was FINDING (MEDIUM), fixed: type */*, a form sent as application/x-form (%ZZ and %25ZZ): refused', async () => {
    await expectRefused('/anytype', 'a=%ZZ', 'a=%25ZZ', 'application/x-form');
  });

  // FINDING (LOW, isolation): iconv-lite (raw-body) strips a leading BOM when decoding
  // text: express.text() gives "refund 10" for both "\uFEFFrefund 10" and "refund 10" (a
  // leading U+FEFF is a character of a text/plain body): replayed. Nothing in the parsed
  // string shows it was there; fix: document it beside the JSON losses of "mount after the
  // parser" (the README names only JSON's), or fingerprint req.rawBody when kept.
  // Fixed: a parsed string whose UTF-8 length differs from the Content-Length of a body sent
  // whole (no Content-Encoding) is refused as decoded: the BOM'd body is refused, the other
  // runs, neither is replayed the other's outcome. (A compressed body is not measured: see
  // the READMEs; keep req.rawBody, or mount idem before express.text, for those.)
  it('Was FINDING (LOW), fixed: express.text(), a leading BOM: refused (length differs), never replayed', async () => {
    const key = randomUUID();
    const before = runs;
    const bom = await post('/text', key, '\uFEFFrefund 10', 'text/plain');
    expect(bom.status).toBe(500);
    expect(JSON.parse(bom.body.toString()).message).toMatch(/leading BOM stripped/);
    const plain = await post('/text', key, 'refund 10', 'text/plain');
    expect(plain.status).toBe(201);
    expect(plain.headers['idempotent-replayed']).toBeUndefined();
    const again = await post('/text', key, '\uFEFFrefund 10', 'text/plain');
    expect(again.status).toBe(500);
    expect(runs).toBe(before + 1);
  });
});

describe('formrev: held (express.urlencoded before idem; formfix: with the bytes kept, or idem first)', () => {
  it('parameterLimit: past 1000 pairs body-parser answers 413, nothing run, no key taken', async () => {
    const pairs = Array.from({ length: 1000 }, (_, i) => `p${i}=${i}`).join('&');
    const key = randomUUID();
    const before = runs;
    const over = await post('/ext', key, `${pairs}&extra=1`);
    expect(over.status).toBe(413);
    const again = await post('/ext', key, `${pairs}&extra=2`);
    expect(again.status).toBe(413);
    expect(runs).toBe(before);
    // Exactly 1000 pairs: parsed whole; refused without the bytes, told apart with them.
    await expectRefused('/ext', pairs.replace('p999=999', 'p999=1'), pairs);
    await expectTold('/kept', pairs.replace('p999=999', 'p999=1'), pairs);
  });

  it('duplicates keep their order; a changed value in a duplicate is 422', async () => {
    await expectTold('/kept', 'a=1&a=2', 'a=2&a=1');
    await expectTold('/before', 'a=1&a=2', 'a=1&a=3');
  });

  it('depth: brackets past a level are refused (400) or kept, never merged', async () => {
    await expectTold('/kept', 'a[b][c][d][e][f][g]=1', 'a[b][c][d][e][f][[g]]=1');
    const deep = `a${'[b]'.repeat(40)}=1`;
    expect((await post('/ext', randomUUID(), deep)).status).toBe(400);
  });

  it('arrayLimit: an index past it becomes a key, told apart from the same value at 0', async () => {
    await expectTold('/kept', 'a[200]=x', 'a[0]=x');
    await expectTold('/before', 'a[200]=x', 'a[0]=x');
  });

  it('allowPrototypes (body-parser passes true): toString=x and toString=y are 422', async () => {
    await expectTold('/kept', 'toString=x', 'toString=y');
  });

  it('allowDots is off: a.b=1 and a[b]=1 are 422', async () => {
    await expectTold('/kept', 'a.b=1', 'a[b]=1');
  });

  it('formfix: + and %20 (the same text spelt twice): different bytes, 422 with the bytes kept or idem first', async () => {
    await expectTold('/kept', 'note=a+b', 'note=a%20b');
    await expectTold('/before', 'note=a+b', 'note=a%20b');
  });

  it('empty values: a= and a=x are 422', async () => {
    await expectTold('/kept', 'a=', 'a=x');
    await expectRefused('/ext', 'a=', 'a=x');
  });

  for (const type of [
    'Application/X-WWW-Form-Urlencoded',
    'APPLICATION/X-WWW-FORM-URLENCODED ; charset=utf-8',
    'application/x-www-form-urlencoded;charset="UTF-8"',
  ])
    it(`Content-Type ${type}: a=%FF and a=%25FF both refused (500), nothing run`, async () => {
      const key = randomUUID();
      const before = runs;
      const first = await post('/ext', key, 'a=%FF', type);
      const other = await post('/ext', key, 'a=%25FF', type);
      expect([first.status, other.status]).toEqual([500, 500]);
      expect(JSON.parse(other.body.toString()).message).toMatch(/parsed into names and values/);
      expect(runs).toBe(before);
    });

  it('Content-Type naming ISO-8859-1 (any case): refused as decoded, nothing run', async () => {
    const key = randomUUID();
    const before = runs;
    const type = 'Application/X-WWW-Form-Urlencoded; charset=ISO-8859-1';
    const first = await post('/ext', key, 'a=%E9', type);
    const other = await post('/ext', key, 'a=%C3%A9', type);
    expect([first.status, other.status]).toEqual([500, 500]);
    expect(JSON.parse(other.body.toString()).message).toMatch(/decoded as iso-8859-1/);
    expect(runs).toBe(before);
  });

  it('gzip (inflated by body-parser): %FF and %25FF refused; forms without % told apart', async () => {
    const gz = (text: string) => gzipSync(Buffer.from(text));
    const key = randomUUID();
    const before = runs;
    const enc = { 'content-encoding': 'gzip' };
    const first = await post('/ext', key, gz('a=%FF'), FORM, enc);
    const other = await post('/ext', key, gz('a=%25FF'), FORM, enc);
    expect([first.status, other.status]).toEqual([500, 500]);
    expect(runs).toBe(before);
    // formfix: a form without % is refused too without the bytes; verify keeps them inflated.
    expect((await post('/ext', randomUUID(), gz('amount=10'), FORM, enc)).status).toBe(500);
    const key2 = randomUUID();
    expect((await post('/kept', key2, gz('amount=10'), FORM, enc)).status).toBe(201);
    const same = await post('/kept', key2, gz('amount=10'), FORM, enc);
    expect(same.headers['idempotent-replayed']).toBe('true');
    expect((await post('/kept', key2, gz('amount=11'), FORM, enc)).status).toBe(422);
  });

  it('no false refusal with the bytes kept or idem first: ordinary forms run, replay, another is 422', async () => {
    const body = 'to=J%C3%A9r%C3%B4me+D&items[0][sku]=A1&items[1][sku]=B2&note=&flag';
    for (const path of ['/kept', '/before']) {
      const key = randomUUID();
      const before = runs;
      const first = await post(path, key, body);
      expect(first.status).toBe(201);
      // The route's parser still ran: the app sees the parsed form.
      expect(JSON.parse(first.body.toString()).body.items[1].sku).toBe('B2');
      expect((await post(path, key, body)).headers['idempotent-replayed']).toBe('true');
      expect((await post(path, key, body.replace('A1', 'A2'))).status).toBe(422);
      expect(runs).toBe(before + 1);
    }
    // The same form parsed without its bytes: refused, not run.
    expect((await post('/ext', randomUUID(), body)).status).toBe(500);
  });

  it('bounded: a wide form (50k pairs, ~0.9 MB parsed) runs and replays in bounded time; 200k pairs is 413', async () => {
    const pairs = (n: number) => Array.from({ length: n }, (_, i) => `k${i}=v${i}`).join('&');
    const key = randomUUID();
    // The bound (15 s for all four; 3 s alone) is judged on this process's own time, as CPU
    // and as wall time less the loop thread's wait for a core (scripts/loop-lateness.ts): a
    // loaded CI lane (two cores, load 25 and more) took 35-40 s of wall time for it. The
    // client's idle timeout and the test's own are wide for that reason, not the bound.
    const big = (k: string, body: string) => post('/big', k, body, FORM, {}, 60_000);
    const { wallMs, waitedMs, cpuMs } = await timedOnCpu(async () => {
      expect((await big(key, pairs(50_000))).status).toBe(201);
      const replay = await big(key, pairs(50_000));
      expect(replay.headers['idempotent-replayed']).toBe('true');
      expect((await big(key, pairs(49_999))).status).toBe(422);
      // Past maxBodyBytes (1 MiB by default, measured on the kept bytes): 413, not run.
      expect((await big(randomUUID(), pairs(200_000))).status).toBe(413);
    });
    console.log('formrev wide form', { wallMs, waitedMs, cpuMs });
    expect(cpuMs).toBeLessThan(15_000);
    expect(wallMs - waitedMs).toBeLessThan(15_000);
  }, 120_000);
});
