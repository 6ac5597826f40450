import { type ServerType, serve } from '@hono/node-server';
import { createMemoryStore } from '@idem/store-memory';
import { Hono } from 'hono';
import { afterAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

// rev10: the multipart fingerprint must see the form the app's parser sees. Hono's
// `c.req.parseBody()` is the platform's `Request.formData()` (undici), which reads the
// Content-Type as a WHATWG MIME type: a quoted parameter value may hold `;boundary=...`.

const servers: ServerType[] = [];
afterAll(() =>
  Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve)))),
);

async function start() {
  const charged: string[] = [];
  const app = new Hono();
  app.use(idempotency({ store: createMemoryStore(), scope: 'global', onWarning: () => {} }));
  app.post('/charges', async (c) => {
    const form = await c.req.parseBody();
    const amount = String(form.amount);
    charged.push(amount);
    return c.json({ charged: amount }, 201);
  });
  const port = await new Promise<number>((resolve) => {
    const server = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, (info) =>
      resolve(info.port),
    );
    servers.push(server);
  });
  return { port, charged };
}

async function post(port: number, key: string, contentType: string, body: string) {
  const response = await fetch(`http://127.0.0.1:${port}/charges`, {
    method: 'POST',
    headers: { 'idempotency-key': key, 'content-type': contentType },
    body,
    signal: AbortSignal.timeout(5_000),
  });
  return {
    status: response.status,
    replayed: response.headers.get('idempotent-replayed') === 'true',
    text: await response.text(),
  };
}

const part = (name: string, value: string, boundary: string) =>
  `--${boundary}\r\nContent-Disposition: form-data; name="${name}"\r\n\r\n${value}\r\n`;

describe('rev10 hono: the multipart boundary is the one the app parses with', () => {
  // A parameter before `boundary` whose quoted value holds `;boundary=AAA`: undici (and
  // busboy) read boundary=BBB; idem's `/;\s*boundary\s*=/` finds `AAA"` inside the quotes.
  const contentType = 'multipart/form-data; note="x;boundary=AAA"; boundary=BBB';
  // What the app reads (BBB parts): amount=<amount>. What idem reads (AAA" parts, the rest
  // is its preamble and epilogue): amount=1, whatever <amount> is.
  const body = (amount: string) =>
    `${part('amount', amount, 'BBB')}${part('pad', `x\r\n${part('amount', '1', 'AAA"')}--AAA"--`, 'BBB')}--BBB--\r\n`;

  // FIXED (was FINDING MEDIUM): a quoted Content-Type parameter holding ";boundary=" makes idem split the form on another boundary than the parser: two different forms (amount 1000, amount 5) get one fingerprint and the second is served the first's outcome
  it('two forms that differ for the app are never one request (422 or a run of its own, never the other replay)', async () => {
    const { port, charged } = await start();
    const first = await post(port, 'mp-quoted', contentType, body('1000'));
    expect(first.status).toBe(201);
    expect(JSON.parse(first.text)).toEqual({ charged: '1000' });
    const second = await post(port, 'mp-quoted', contentType, body('5'));
    // Observed: 201, Idempotent-Replayed: true, {"charged":"1000"} for a request of amount 5.
    expect(second.replayed && JSON.parse(second.text).charged !== '5').toBe(false);
    // idem splits on BBB as undici does: another form under the key (422).
    expect(second.status).toBe(422);
    expect(charged).toEqual(['1000']);
  });

  it('held: a plain boundary, another amount under the same key: 422, nothing run', async () => {
    const { port, charged } = await start();
    const plain = 'multipart/form-data; boundary=BBB';
    const one = `${part('amount', '1000', 'BBB')}--BBB--\r\n`;
    const two = `${part('amount', '5', 'BBB')}--BBB--\r\n`;
    expect((await post(port, 'mp-plain', plain, one)).status).toBe(201);
    expect((await post(port, 'mp-plain', plain, two)).status).toBe(422);
    // The same form with another boundary is the same request (replayed).
    const again = await post(
      port,
      'mp-plain',
      'multipart/form-data; boundary=ZZZ',
      `${part('amount', '1000', 'ZZZ')}--ZZZ--\r\n`,
    );
    expect(again).toMatchObject({ status: 201, replayed: true });
    expect(charged).toEqual(['1000']);
  });
});
