/**
 * settlerev review: an Express response whose recording settled (the held end went out, or
 * the record failed and the response was destroyed), then written to, ended and destroyed by
 * the app, as a late logger or a second `res.send` would. Real Express on loopback, memory
 * store. Passes on 07aad06 too.
 */
import type { Server } from 'node:http';
import { listening, type RunningApp, send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import express from 'express';
import { afterEach, describe, expect, it } from 'vitest';
import { getIdempotency, idempotency } from '../src/index.js';

const apps: RunningApp[] = [];
afterEach(async () => {
  await Promise.all(apps.splice(0).map((app) => app.close()));
});

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('settlerev: Express after the recording settled', () => {
  it('a second send, writes and a destroy after the end: the app hears Node; replay and runs unchanged', async () => {
    const store = createMemoryStore();
    const logs: Record<string, string[]> = {};
    let runs = 0;
    let failNext = false;
    const app = express();
    app.use(express.json());
    app.use(idempotency({ store, scope: 'global', onWarning: () => {} }));
    app.post('/orders', async (req, res) => {
      runs++;
      const key = String(req.headers['idempotency-key']);
      const log: string[] = [];
      logs[key] = log;
      res.on('error', (error: { code?: string }) => log.push(`res:error:${error.code}`));
      res.on('close', () => log.push('res:close'));
      if (failNext) {
        failNext = false;
        // An operator deletes the record while it runs: its completion fails.
        await store.admin.delete(getIdempotency(res)?.storageKey as string);
      }
      res.status(201).json({ n: req.body.n });
      try {
        res.json({ again: true });
      } catch (error) {
        log.push(`send-again:${(error as { code?: string }).code}`);
      }
      for (let i = 0; i < 200 && !res.writableFinished && !res.destroyed; i++) await sleep(10);
      await sleep(20);
      log.push(`settled:${res.writableFinished},${res.destroyed}`);
      res.write('x', (error) =>
        log.push(`write-after:${error ? (error as { code?: string }).code : 'ok'}`),
      );
      res.destroy();
      await sleep(20);
      log.push('done');
    });
    const server = app.listen(0, '127.0.0.1') as Server;
    const running = await listening(server);
    apps.push(running);
    const first = await send(running.url, '/orders', { key: 'k1', body: { n: 1 } });
    expect(first.status).toBe(201);
    expect(first.body.toString()).toBe('{"n":1}');
    for (let i = 0; i < 100 && !logs.k1?.includes('done'); i++) await sleep(10);
    expect(logs.k1).toContain('send-again:ERR_HTTP_HEADERS_SENT');
    expect(logs.k1).toContain('settled:true,true');
    expect(logs.k1).toContain('write-after:ERR_STREAM_WRITE_AFTER_END');
    expect(logs.k1?.filter((line) => line === 'res:close')).toHaveLength(1);
    const replay = await send(running.url, '/orders', { key: 'k1', body: { n: 1 } });
    expect(replay.headers['idempotent-replayed']).toBe('true');
    expect(replay.body.toString()).toBe('{"n":1}');
    expect(runs).toBe(1);

    failNext = true;
    await expect(send(running.url, '/orders', { key: 'k2', body: { n: 2 } })).rejects.toThrow();
    for (let i = 0; i < 100 && !logs.k2?.includes('done'); i++) await sleep(10);
    expect(logs.k2).toContain('settled:false,true');
    expect(logs.k2?.filter((line) => line === 'res:close')).toHaveLength(1);
    const retry = await send(running.url, '/orders', { key: 'k2', body: { n: 2 } });
    expect(retry.status).toBe(201);
    expect(runs).toBe(3);
  });
});
