import { once } from 'node:events';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { type Exchange, send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import express from 'express';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

// The usual Express stream stops on the request's 'close' by ending the response. That end
// is the stream cut short because the client left, not the route's outcome: it must never be
// recorded and replayed to the retry as if it were the whole body.

const EVENTS = 10;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
let runs = 0;
let server: Server;
let url = '';

beforeAll(async () => {
  const app = express();
  app.use(
    idempotency({
      store: createMemoryStore(),
      scope: () => ({ principal: 'tenant-a' }),
      onWarning: () => {},
    }),
  );
  app.post('/events', (req, res) => {
    runs++;
    res.status(200).type('text/event-stream');
    let sent = 0;
    const timer = setInterval(() => {
      res.write(`data: ${sent++}\n\n`);
      if (sent === EVENTS) {
        clearInterval(timer);
        res.end();
      }
    }, 20);
    req.on('close', () => {
      clearInterval(timer);
      res.end();
    });
  });
  server = app.listen(0, '127.0.0.1');
  await once(server, 'listening');
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

async function retry(key: string): Promise<Exchange> {
  let exchange = await send(url, '/events', { key });
  for (let i = 0; exchange.status === 409 && i < 100; i++) {
    await sleep(50);
    exchange = await send(url, '/events', { key });
  }
  return exchange;
}

describe('@idem/express when the route ends its stream on the request close', () => {
  it('does not record the cut stream: the retry runs the route again and gets every event', async () => {
    const left = await send(url, '/events', { key: 'cut', leaveAfterBytes: 1 });
    expect(left.complete).toBe(false);
    const again = await retry('cut');
    expect(again.headers['idempotent-replayed']).toBeUndefined();
    expect(again.body.toString().match(/^data: /gm)).toHaveLength(EVENTS);
    expect(runs).toBe(2);
    // The whole stream is recorded: the next retry replays it.
    const replay = await send(url, '/events', { key: 'cut' });
    expect(replay.headers['idempotent-replayed']).toBe('true');
    expect(replay.body.equals(again.body)).toBe(true);
    expect(runs).toBe(2);
  });
});
