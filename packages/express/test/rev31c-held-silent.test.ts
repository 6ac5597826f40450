import { randomUUID } from 'node:crypto';
import type { ServerResponse } from 'node:http';
import { finished } from 'node:stream/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { listening, send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import express from 'express';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { heldWhileRunning, idempotency } from '../src/index.js';

// rev31c review of nestres31 (the response's held-back 'close' given to its listeners once the
// body was silent a whole lease with a handler held): Express goes through the same recorder
// path with `heldWhileRunning`. A 'close' listener of a logger added after idem (pino-http's
// kind) made a handler still working (a slow call between writes) look like one awaiting its
// response: told, its next write went to a destroyed response (its callback got
// ERR_STREAM_DESTROYED) and the handler failed after its work: released, run again.

const LEASE = 300;
let runs = 0;
let gate: Promise<void> = Promise.resolve();
let gatedRun = 0;

/** A write that fails as Node reports it (its callback's error). */
const written = (res: ServerResponse, chunk: string) =>
  new Promise<void>((resolve, reject) =>
    res.write(chunk, (error) => (error ? reject(error) : resolve())),
  );

describe('rev31c express: a handler held while it runs, its client gone mid-body', () => {
  let url = '';
  let close = async () => {};
  beforeAll(async () => {
    const app = express();
    app.use(
      idempotency({
        store: createMemoryStore(),
        scope: 'global',
        leaseMs: LEASE,
        maxHoldMs: 30_000,
      }),
    );
    // A request logger mounted after idem: it listens to every response's 'close'.
    app.use((_req, res, next) => {
      res.on('close', () => {});
      next();
    });
    app.post(
      '/working',
      heldWhileRunning(async (_req, res) => {
        const run = ++runs;
        res.writeHead(200, { 'content-type': 'text/plain' });
        await written(res, `begun ${run}.`);
        if (run === gatedRun) await gate;
        await written(res, 'more.');
        res.end('done');
      }),
    );
    app.post(
      '/finished',
      heldWhileRunning(async (_req, res) => {
        ++runs;
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.write('begun.');
        await finished(res);
      }),
    );
    ({ url, close } = await listening(app.listen(0, '127.0.0.1')));
  });
  afterAll(() => close());

  it('a handler still working is held (409) and recorded once, a logger listening or not', async () => {
    const key = randomUUID();
    let release!: () => void;
    gate = new Promise((resolve) => {
      release = resolve;
    });
    const before = runs;
    gatedRun = before + 1;
    await send(url, '/working', { key, body: { a: 1 }, leaveAfterBytes: 3 }).catch(() => undefined);
    const statuses: number[] = [];
    for (let i = 0; i < 12; i++) {
      await sleep(LEASE / 2);
      statuses.push((await send(url, '/working', { key, body: { a: 1 } })).status);
    }
    release();
    let last = await send(url, '/working', { key, body: { a: 1 } });
    for (let i = 0; i < 20 && last.status === 409; i++) {
      await sleep(LEASE / 4);
      last = await send(url, '/working', { key, body: { a: 1 } });
    }
    expect(runs, `retries got ${statuses.join(',')}`).toBe(before + 1);
    expect([last.status, last.headers['idempotent-replayed'], last.body.toString()]).toEqual([
      200,
      'true',
      `begun ${before + 1}.more.done`,
    ]);
  });
});
