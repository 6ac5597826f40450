// perf35 (issue 12): on Node 20 the held handler's AsyncLocalStorage turns on promise hooks
// for the whole process, and from then on every promise a request creates costs more. This
// counts the PROMISE async resources one request creates in the server (async_hooks `init`,
// as the hook the storage enables sees them) beyond a plain route of the same app: a first
// execution and a replay on the memory store, over loopback. The budgets are what the
// twenty-sixth pass reached (benchmarks/HISTORY.md); a change that adds promises fails here.
import { createHook } from 'node:async_hooks';
import { request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createMemoryStore } from '@idem/store-memory';
import Fastify from 'fastify';
import { afterAll, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

const FIRST_BUDGET = 9;
const REPLAY_BUDGET = 2;

let counting = false;
let promises = 0;
const hook = createHook({
  init(_id, type) {
    if (counting && type === 'PROMISE') promises++;
  },
});
const app = Fastify();
afterAll(async () => {
  hook.disable();
  await app.close();
});

/** One POST through callbacks only (no promise of the client's), its status and replay header. */
function post(port: number, path: string, key: string, done: (seen: string) => void): void {
  const req = request(
    {
      port,
      host: '127.0.0.1',
      path,
      method: 'POST',
      headers: { 'content-type': 'application/json', 'idempotency-key': key },
    },
    (res) => {
      res.resume();
      res.on('end', () => {
        // Two turns for what settles after the answer went out (the recorder, the engine).
        setImmediate(() =>
          setImmediate(() =>
            done(`${res.statusCode} ${res.headers['idempotent-replayed'] ?? '-'}`),
          ),
        );
      });
    },
  );
  req.end('{"sku":"a","qty":1}');
}

async function counted(port: number, path: string, key: string): Promise<[number, string]> {
  let seen = '';
  const settled = new Promise<void>((resolve) => {
    counting = true;
    promises = 0;
    post(port, path, key, (status) => {
      counting = false;
      seen = status;
      resolve();
    });
  });
  await settled;
  return [promises, seen];
}

it('a first execution and a replay create no more promises than the budget', async () => {
  await app.register(async (scope) => {
    await scope.register(idempotency, { store: createMemoryStore(), scope: 'global' });
    scope.post('/orders', async (_request, reply) => reply.code(201).send({ ok: true }));
  });
  app.post('/plain', async (_request, reply) => reply.code(201).send({ ok: true }));
  await app.listen({ port: 0, host: '127.0.0.1' });
  const { port } = app.server.address() as AddressInfo;
  hook.enable();
  const first: number[] = [];
  const replay: number[] = [];
  const plain: number[] = [];
  for (let i = 0; i < 8; i++) {
    const [made, status] = await counted(port, '/orders', `k${i}`);
    expect(status).toBe('201 -');
    const [again, replayed] = await counted(port, '/orders', `k${i}`);
    expect(replayed).toBe('201 true');
    const [bare, bareStatus] = await counted(port, '/plain', `k${i}`);
    expect(bareStatus).toBe('201 -');
    first.push(made);
    replay.push(again);
    plain.push(bare);
  }
  // The least of eight: anything else the process ran meanwhile only adds.
  const least = (counts: number[]) => Math.min(...counts);
  expect(least(first) - least(plain)).toBeLessThanOrEqual(FIRST_BUDGET);
  expect(least(replay) - least(plain)).toBeLessThanOrEqual(REPLAY_BUDGET);
});
