import type { Server } from 'node:http';
import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import { connect } from 'node:net';
import { createMemoryStore } from '@idem/store-memory';
import express, { type RequestHandler } from 'express';
import { afterAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

// rev10: the multipart fingerprint must see the form the app's parser sees. The parser here
// is multer 2 (busboy 1.6), the one the README points Express users to ("put the middleware
// before the multipart parser"); a devDependency of this package for this test.
const require = createRequire(import.meta.url);
const multer = require('multer') as () => { none(): RequestHandler };

const servers: Server[] = [];
afterAll(() =>
  Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve)))),
);

async function start() {
  const charged: string[] = [];
  const app = express();
  app.use(idempotency({ store: createMemoryStore(), scope: 'global', onWarning: () => {} }));
  app.post('/charges', multer().none(), (req, res) => {
    const amount = String((req.body as { amount?: unknown }).amount);
    charged.push(amount);
    res.status(201).json({ charged: amount });
  });
  const server = app.listen(0, '127.0.0.1');
  servers.push(server);
  await new Promise((resolve) => server.once('listening', resolve));
  return { port: (server.address() as AddressInfo).port, charged };
}

/** A raw POST (the body exactly as written), with a 5 s bound. */
function post(port: number, key: string, contentType: string, body: string) {
  return new Promise<{ status: number; replayed: boolean; text: string }>((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    const timer = setTimeout(() => socket.destroy(new Error('no answer within 5 s')), 5_000);
    let data = '';
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => {
      data += chunk;
    });
    socket.on('error', reject);
    socket.on('close', () => {
      clearTimeout(timer);
      const [head = '', text = ''] = data.split('\r\n\r\n');
      resolve({
        status: Number(head.split(' ')[1]),
        replayed: /\r\nidempotent-replayed: true/i.test(head),
        text,
      });
    });
    const bytes = Buffer.from(body, 'latin1');
    socket.write(
      `POST /charges HTTP/1.1\r\nHost: a\r\nConnection: close\r\nIdempotency-Key: ${key}\r\nContent-Type: ${contentType}\r\nContent-Length: ${bytes.length}\r\n\r\n`,
    );
    socket.write(bytes);
  });
}

const part = (name: string, value: string, boundary: string, padding = '') =>
  `--${boundary}${padding}\r\nContent-Disposition: form-data; name="${name}"\r\n\r\n${value}\r\n`;

describe('rev10 express + multer: the multipart fingerprint and the parser agree', () => {
  // RFC 2046 allows transport padding (spaces, tabs) after a boundary; idem's canonical form
  // drops it, busboy skips the part after a padded boundary. Two forms, one canonical form:
  //   A: --B\r\n amount=1000 --B \r\n amount=5 --B--   (busboy: amount=1000)
  //   B: --B \r\n amount=1000 --B\r\n amount=5 --B--   (busboy: amount=5)
  const type = 'multipart/form-data; boundary=B';
  const formA = `${part('amount', '1000', 'B')}${part('amount', '5', 'B', ' ')}--B--\r\n`;
  const formB = `${part('amount', '1000', 'B', ' ')}${part('amount', '5', 'B')}--B--\r\n`;

  it('setup: multer reads the two forms as two different amounts', async () => {
    const { port, charged } = await start();
    expect((await post(port, 'setup-a', type, formA)).status).toBe(201);
    expect((await post(port, 'setup-b', type, formB)).status).toBe(201);
    expect(charged).toEqual(['1000', '5']);
  });

  // FIXED (was FINDING MEDIUM): idem's multipart canonical form drops transport padding after a boundary, busboy/multer skips the part after a padded boundary: a form for amount 5 is served the recorded charge of amount 1000 (one fingerprint for two forms the app reads differently)
  it('the form multer reads as amount 5 is never served the amount 1000 outcome', async () => {
    const { port, charged } = await start();
    const first = await post(port, 'pad', type, formA);
    expect(JSON.parse(first.text)).toEqual({ charged: '1000' });
    const second = await post(port, 'pad', type, formB);
    // Observed: 201, Idempotent-Replayed: true, {"charged":"1000"}.
    expect(second.replayed && JSON.parse(second.text).charged !== '5').toBe(false);
    // The padding is kept in the canonical form: another request under the key (422).
    expect(second.status).toBe(422);
    expect(charged).toEqual(['1000']);
  });

  // The same with a quoted parameter holding ";boundary=": busboy reads boundary=BBB, idem AAA".
  const quotedType = 'multipart/form-data; note="x;boundary=AAA"; boundary=BBB';
  const quoted = (amount: string) =>
    `${part('amount', amount, 'BBB')}${part('pad', `x\r\n${part('amount', '1', 'AAA"')}--AAA"--`, 'BBB')}--BBB--\r\n`;

  // FIXED (was FINDING MEDIUM): a quoted Content-Type parameter holding ";boundary=" makes idem split the form on another boundary than busboy: amount 5 is served the amount 1000 outcome
  it('a quoted parameter holding ";boundary=": amount 5 is never served the amount 1000 outcome', async () => {
    const { port, charged } = await start();
    expect(JSON.parse((await post(port, 'quoted', quotedType, quoted('1000'))).text)).toEqual({
      charged: '1000',
    });
    const second = await post(port, 'quoted', quotedType, quoted('5'));
    expect(second.replayed && JSON.parse(second.text).charged !== '5').toBe(false);
    // idem splits on BBB too: another form under the key (422).
    expect(second.status).toBe(422);
    expect(charged).toEqual(['1000']);
  });

  it('two boundary parameters (parsers differ on which one): 400 problem, nothing run', async () => {
    const { port, charged } = await start();
    for (const twice of [
      'multipart/form-data; boundary=BBB; boundary=AAA',
      'multipart/form-data; boundary=AAA; BOUNDARY="BBB"',
    ]) {
      const answer = await post(port, `twice-${twice.length}`, twice, quoted('5'));
      expect(answer.status, twice).toBe(400);
      expect(JSON.parse(answer.text), twice).toMatchObject({
        type: 'https://idem.dev/problems/malformed-body',
        status: 400,
      });
    }
    expect(charged).toEqual([]);
  });

  it('held: the same form with another boundary replays; another amount is 422', async () => {
    const { port, charged } = await start();
    const one = `${part('amount', '1000', 'B')}--B--\r\n`;
    expect((await post(port, 'held', type, one)).status).toBe(201);
    const again = await post(
      port,
      'held',
      'multipart/form-data; boundary=ZZ',
      `${part('amount', '1000', 'ZZ')}--ZZ--\r\n`,
    );
    expect(again).toMatchObject({ status: 201, replayed: true });
    expect((await post(port, 'held', type, `${part('amount', '5', 'B')}--B--\r\n`)).status).toBe(
      422,
    );
    expect(charged).toEqual(['1000']);
  });
});

// rev11: a quoted-pair in the boundary (the review of the rev10 fixes).
const busboyForm = (amount: string) =>
  `--a\\bc\r\nContent-Disposition: form-data; name="amount"\r\n\r\n${amount}\r\n--a\\bc--\r\n` +
  // What idem reads as the form (busboy's epilogue): the same in both requests.
  `--abc\r\nContent-Disposition: form-data; name="note"\r\n\r\nsame\r\n--abc--\r\n`;
const type = 'multipart/form-data; boundary="a\\bc"';

describe('rev11 express + multer: a quoted-pair in the boundary', () => {
  // FIXED (was FINDING HIGH): boundary="a\bc": idem unescaped the quoted-pair (boundary abc)
  // while busboy/multer keeps the backslash (a\bc); the form multer reads lay in what idem
  // took for the preamble, so two requests with different amounts got one fingerprint and the
  // second (amount 5) was answered the first's replay (charged 1000) instead of 422. A
  // multipart Content-Type with a backslash is now refused (400 problem, nothing run): parsers
  // read quoted-pairs differently, and RFC 2046 boundaries have no backslash.
  it('a boundary with a quoted-pair: 400, nothing run, never the other replay', async () => {
    const { port, charged } = await start();
    const first = await post(port, 'rev11-qp', type, busboyForm('1000'));
    expect(first.status).toBe(400);
    expect(first.text).toContain('backslash');
    const second = await post(port, 'rev11-qp', type, busboyForm('5'));
    expect(second.replayed).toBe(false);
    expect(second.status).toBe(400);
    expect(charged).toEqual([]);
  });

  it('held: the same forms with a plain boundary are told apart (201, then 422)', async () => {
    const { port, charged } = await start();
    const plainType = 'multipart/form-data; boundary=abc';
    const form = (amount: string) =>
      `--abc\r\nContent-Disposition: form-data; name="amount"\r\n\r\n${amount}\r\n--abc--\r\n`;
    expect((await post(port, 'rev11-plain', plainType, form('1000'))).status).toBe(201);
    const second = await post(port, 'rev11-plain', plainType, form('5'));
    expect(second.replayed).toBe(false);
    expect(second.status).toBe(422);
    expect(charged).toEqual(['1000']);
  });
});
