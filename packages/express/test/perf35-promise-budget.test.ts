// perf35 (issue 12): promises cost more once promise hooks are on (in Node 20 an
// AsyncLocalStorage turns them on for the process: `heldWhileRunning` enters one). Counted
// here through async_hooks `init` (type PROMISE) in this process, beyond a plain route of the
// same app, for one request over loopback on the memory store: a first execution and a replay
// through the middleware, and the same under `heldWhileRunning`. The budgets are what the
// twenty-sixth pass reached (benchmarks/HISTORY.md); a change that adds promises fails here.
import { createHook } from 'node:async_hooks';
import { type IncomingMessage, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createMemoryStore } from '@idem/store-memory';
import express from 'express';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { heldWhileRunning, idempotency } from '../src/index.js';

const BUDGET = {
  first: 9,
  replay: 8,
  heldFirst: 13,
  heldReplay: 8,
};

const tally = { on: false, made: 0 };
const hook = createHook({
  init(_asyncId, type) {
    if (tally.on && type === 'PROMISE') tally.made += 1;
  },
});
let server: Server;
let port = 0;

beforeAll(async () => {
  const app = express();
  const idem = idempotency({ store: createMemoryStore(), scope: 'global' });
  const created = (_req: express.Request, res: express.Response) => {
    res.status(201).json({ ok: true });
  };
  app.post('/orders', idem, created);
  app.post(
    '/held',
    idem,
    heldWhileRunning(async (req, res) => created(req, res)),
  );
  app.post('/plain', created);
  server = app.listen(0, '127.0.0.1');
  await new Promise((resolve) => server.once('listening', resolve));
  port = (server.address() as AddressInfo).port;
  hook.enable();
});
afterAll(async () => {
  hook.disable();
  await new Promise((resolve) => server.close(resolve));
});

/**
 * The promises made from sending one POST until two turns after its answer came in (what
 * settles after it went out), with its status and replay header. The client is callbacks only.
 */
function promisesOf(path: string, key: string): Promise<{ made: number; answer: string }> {
  return new Promise((resolve) => {
    tally.on = true;
    tally.made = 0;
    const onAnswer = (res: IncomingMessage) => {
      const answer = `${res.statusCode} ${res.headers['idempotent-replayed'] ?? '-'}`;
      res.resume();
      res.on('end', () =>
        setImmediate(() =>
          setImmediate(() => {
            tally.on = false;
            resolve({ made: tally.made, answer });
          }),
        ),
      );
    };
    const headers = { 'content-type': 'application/json', 'idempotency-key': key };
    request({ port, host: '127.0.0.1', path, method: 'POST', headers }, onAnswer).end('{"n":1}');
  });
}

it('first executions and replays create no more promises than the budget', async () => {
  const seen: Record<keyof typeof BUDGET | 'plain', number> = {
    first: Infinity,
    replay: Infinity,
    heldFirst: Infinity,
    heldReplay: Infinity,
    plain: Infinity,
  };
  // The least of eight rounds: whatever else the process does meanwhile only adds.
  const take = async (name: keyof typeof seen, path: string, key: string, answer: string) => {
    const counted = await promisesOf(path, key);
    expect(counted.answer).toBe(answer);
    seen[name] = Math.min(seen[name], counted.made);
  };
  for (let round = 0; round < 8; round++) {
    await take('first', '/orders', `o${round}`, '201 -');
    await take('replay', '/orders', `o${round}`, '201 true');
    await take('heldFirst', '/held', `h${round}`, '201 -');
    await take('heldReplay', '/held', `h${round}`, '201 true');
    await take('plain', '/plain', `p${round}`, '201 -');
  }
  for (const name of Object.keys(BUDGET) as (keyof typeof BUDGET)[])
    expect({ name, added: seen[name] - seen.plain }).toEqual({
      name,
      added: Math.min(seen[name] - seen.plain, BUDGET[name]),
    });
});
