import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { GENERATION_HEADER, REPLAYED_HEADER } from '@idem/http';
import { createMemoryStore } from '@idem/store-memory';
import express from 'express';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

let server: Server;
let url: string;
let runs = 0;

beforeAll(async () => {
  const app = express();
  app.use(express.json());
  app.use(idempotency({ store: createMemoryStore(), scope: 'global', onWarning: () => {} }));
  app.post('/stream', async (_req, res) => {
    runs++;
    res.status(200).type('text/event-stream');
    for (let n = 1; n <= 6; n++) {
      res.write(`id: ${n}\ndata: ${n}\n\n`);
      await new Promise((resolve) => setTimeout(resolve, 40));
    }
    res.end();
  });
  server = app.listen(0, '127.0.0.1');
  await new Promise((resolve) => server.once('listening', resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
});

const post = (headers: Record<string, string> = {}) =>
  fetch(`${url}/stream`, {
    method: 'POST',
    headers: { 'idempotency-key': 'e1', 'content-type': 'application/json', ...headers },
    body: '{}',
  });

describe('Express: live streams', () => {
  it('a duplicate attaches to the stream in flight (same bytes), names the generation, resumes after Last-Event-ID', async () => {
    const first = await post();
    expect(first.headers.get(GENERATION_HEADER)).toBe('1');
    const reader = first.body!.getReader();
    let text = '';
    while (!text.includes('data: 2')) text += new TextDecoder().decode((await reader.read()).value);
    const [attached, resumed] = await Promise.all([post(), post({ 'last-event-id': '2' })]);
    expect(attached.headers.get(REPLAYED_HEADER)).toBe('true');
    for (let read = await reader.read(); !read.done; read = await reader.read())
      text += new TextDecoder().decode(read.value);
    expect(await attached.text()).toBe(text);
    expect(await resumed.text()).toBe(text.slice('id: 1\ndata: 1\n\nid: 2\ndata: 2\n\n'.length));
    expect(runs).toBe(1);
  });
});
