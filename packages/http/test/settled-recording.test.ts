import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import type { IdempotencyStore } from '@idem/core';
import { listening, type RunningApp, send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import { afterEach, describe, expect, it } from 'vitest';
import { createIdempotencyHandler } from '../src/index.js';
import { recordServerResponse, sendDecisionResponse } from '../src/node.js';
import { described } from './support/recorded-server.js';

// A response whose outcome is settled (its held end went out, or it was destroyed after a
// record that failed) holds nothing of its execution: `res` and `req` keep their replaced
// methods for as long as they live, and a dead response V8 allocated in the old generation
// keeps what it points to through every scavenge (benchmarks/HISTORY.md, twentieth pass).
// Here the app keeps every `req` and `res` alive, as a framework or a log might; the
// recorders (and their execution contexts) must still be collected.

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

const servers: RunningApp[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((app) => app.close()));
});

interface Serving {
  /** Runs before the app's end (given the execution's storage key). */
  beforeEnd?: (storageKey: string) => Promise<void>;
  /** The app's status (200 unless given). */
  status?: number;
  /** As `recordServerResponse`'s option. */
  isHandlerOutcome?: (status: number) => boolean;
  /** The app writes part of its body and destroys the response instead of ending it. */
  destroys?: boolean;
}

async function serve(store: IdempotencyStore, serving: Serving = {}) {
  const { beforeEnd, status = 200, isHandlerOutcome, destroys = false } = serving;
  const kept: { req: IncomingMessage; res: ServerResponse }[] = [];
  const recorders: WeakRef<object>[] = [];
  const contexts: WeakRef<object>[] = [];
  const late: (Error | null | undefined)[] = [];
  const idem = createIdempotencyHandler<IncomingMessage>({
    store,
    scope: 'global',
    onWarning: () => {},
  });
  const server = createServer(async (req, res) => {
    kept.push({ req, res });
    const decision = await idem.begin(described(req));
    if (decision.action === 'respond') return sendDecisionResponse(res, decision);
    if (decision.action !== 'execute') throw new Error(`unexpected ${decision.action}`);
    recorders.push(new WeakRef(decision.recorder));
    contexts.push(new WeakRef(decision.recorder.context));
    recordServerResponse(res, decision.recorder, { isHandlerOutcome });
    res.statusCode = status;
    res.setHeader('content-type', 'text/plain');
    await beforeEnd?.(decision.recorder.context.storageKey);
    if (destroys) {
      res.write('part of ');
      res.destroy();
      // What the app does after its destroy goes to Node, which refuses it; nothing is kept.
      res.write('more', (error) => late.push(error));
      return;
    }
    res.end(`done ${req.headers['idempotency-key']}`);
  });
  server.listen(0, '127.0.0.1');
  const app = await listening(server);
  servers.push(app);
  return { url: app.url, kept, recorders, contexts, late };
}

async function collected(refs: WeakRef<object>[]): Promise<number> {
  for (let i = 0; i < 5; i++) {
    await new Promise((resolve) => setImmediate(resolve));
    gc();
  }
  return refs.filter((ref) => ref.deref() === undefined).length;
}

describe('a settled response holds nothing of its execution', () => {
  it('after the held end went out: the recorder and its context are collected while req and res live', async () => {
    const { url, kept, recorders, contexts } = await serve(createMemoryStore());
    for (let i = 0; i < 40; i++) {
      const answer = await send(url, '/orders', { key: `k-${i}`, body: { i } });
      expect(answer.status).toBe(200);
      expect(answer.body.toString()).toBe(`done k-${i}`);
    }
    const replay = await send(url, '/orders', { key: 'k-3', body: { i: 3 } });
    expect(replay.headers['idempotent-replayed']).toBe('true');
    expect(replay.body.toString()).toBe('done k-3');
    expect(kept).toHaveLength(41);
    expect(recorders).toHaveLength(40);
    // Every one of them: the responses (kept above) no longer reach their recorders.
    expect(await collected(recorders)).toBe(40);
    expect(await collected(contexts)).toBe(40);
    // The replaced methods stay on `res`, and still pass to Node.
    const { res } = kept[0] as { res: ServerResponse };
    expect(Object.hasOwn(res, 'end')).toBe(true);
    expect(res.writableEnded).toBe(true);
  });

  it('after a record that failed: the response is destroyed, and its recorder is collected', async () => {
    // An operator deletes each record while its execution runs: the completion finds its
    // lease gone (not an outage to retry), and the record fails.
    const store = createMemoryStore();
    const { url, kept, recorders } = await serve(store, {
      beforeEnd: (storageKey) => store.admin.delete(storageKey).then(() => undefined),
    });
    for (let i = 0; i < 10; i++) {
      // Never a body that was not recorded: the connection is cut instead of ended.
      await expect(send(url, '/orders', { key: `f-${i}`, body: { i } })).rejects.toThrow(
        'socket hang up',
      );
    }
    expect(kept).toHaveLength(10);
    expect((kept[0] as { res: ServerResponse }).res.destroyed).toBe(true);
    expect(await collected(recorders)).toBe(10);
  });

  it('a response that went through unrecorded (not the handler outcome): its recorder is collected too', async () => {
    const { url, kept, recorders } = await serve(createMemoryStore(), {
      status: 404,
      // As the Express adapter judges an answer made before any route matched.
      isHandlerOutcome: (status) => status !== 404,
    });
    for (let i = 0; i < 10; i++) {
      const answer = await send(url, '/missing', { key: `b-${i}`, body: { i } });
      expect(answer.status).toBe(404);
      expect(answer.body.toString()).toBe(`done b-${i}`);
    }
    // Never recorded: the key was released, a retry runs the app again.
    const again = await send(url, '/missing', { key: 'b-0', body: { i: 0 } });
    expect(again.status).toBe(404);
    expect(again.headers['idempotent-replayed']).toBeUndefined();
    expect(kept).toHaveLength(11);
    expect(await collected(recorders)).toBe(11);
  });

  it('a response the app destroyed: the key is released, and its recorder is collected', async () => {
    const { url, kept, recorders, contexts, late } = await serve(createMemoryStore(), {
      destroys: true,
    });
    for (let i = 0; i < 10; i++)
      await expect(send(url, '/orders', { key: `d-${i}`, body: { i } })).rejects.toThrow();
    // Released, not recorded: a retry runs the app again (and is destroyed again).
    await expect(send(url, '/orders', { key: 'd-0', body: { i: 0 } })).rejects.toThrow();
    expect(kept).toHaveLength(11);
    expect(recorders).toHaveLength(11);
    expect((kept[0] as { res: ServerResponse }).res.destroyed).toBe(true);
    await new Promise((resolve) => setImmediate(resolve));
    // The write after the destroy was Node's to refuse, as without idem.
    expect(late).toHaveLength(11);
    for (const error of late)
      expect((error as NodeJS.ErrnoException)?.code).toBe('ERR_STREAM_DESTROYED');
    expect(await collected(recorders)).toBe(11);
    expect(await collected(contexts)).toBe(11);
  });
});
