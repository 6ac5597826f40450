/**
 * settlerev review: what a response does once its recording is settled (its held end went out,
 * or it was destroyed after a record that failed), compared with before the recording let go
 * of its recorder (07aad06). Real node:http and node:http2 (h2c) servers on loopback, memory
 * store. Everything here passes on both: the app's writes, ends and destroys after the end,
 * the writes queued while the end was held, a client that left before the end, pipelined
 * requests, and a failed record all behave, replay and run as they did.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as createH2Server } from 'node:http2';
import { connect, type Socket } from 'node:net';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import {
  closeAll,
  deferred,
  h1LeaveAfterFirst,
  h2,
  h2ResetAfter,
  listenLoopback,
  recordedHandler,
  session,
  untilSettled,
} from './support/h2c.js';
import { firstCompletionFails, h1Post } from './support/settlerev.js';

afterEach(closeAll);

/** Every log, printed at the end (for comparing the whole logs with the base commit's). */
const all: Record<string, Log> = {};
afterAll(() => {
  if (process.env.SETTLEREV_PRINT) console.log(JSON.stringify(all, null, 1));
});

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

type Log = string[];

/** Logs what the app hears of `res`. */
function watch(res: ServerResponse, log: Log): void {
  for (const event of ['finish', 'close', 'error'])
    res.on(event, (error?: { code?: string }) =>
      log.push(`res:${event}${error?.code ? `:${error.code}` : ''}`),
    );
}

const cb =
  (log: Log, name: string) =>
  (error?: Error | null): void => {
    log.push(`${name}:${error ? ((error as { code?: string }).code ?? 'error') : 'ok'}`);
  };

/** Writes, ends and destroys after the response was settled, logging what the app hears. */
async function afterSettled(res: ServerResponse, log: Log): Promise<void> {
  for (let i = 0; i < 100 && !res.writableFinished && !res.destroyed; i++) await sleep(10);
  await sleep(30);
  log.push(`settled:ended=${res.writableEnded},destroyed=${res.destroyed}`);
  res.write('after', cb(log, 'write-after'));
  res.end('after-end', cb(log, 'end-after'));
  res.destroy();
  log.push(`destroyed:${res.destroyed}`);
  await sleep(30);
}

function app(logs: Map<string, Log>, gone: Map<string, Promise<void>>) {
  return async (req: IncomingMessage, res: ServerResponse) => {
    const key = String(req.headers['idempotency-key']);
    const log: Log = [];
    logs.set(key, log);
    all[`${req.httpVersion}:${key}`] = log;
    watch(res, log);
    res.setHeader('content-type', 'text/plain');
    if (key.includes('length')) res.setHeader('content-length', '5');
    log.push(`write:${res.write('a-')}`);
    if (key.includes('gone')) {
      await gone.get(key);
      await sleep(40);
      log.push(`write-gone:${res.write('b-')}`);
    }
    res.end('end', cb(log, 'end'));
    // Queued while the end waits for the record: Node answers them after the real end.
    log.push(`late-write:${res.write('late', cb(log, 'late-write'))}`);
    res.end('late-end', cb(log, 'late-end'));
    await afterSettled(res, log);
    log.push('done');
  };
}

describe('settlerev: a settled response behaves as before', () => {
  for (const key of ['plain', 'length']) {
    it(`HTTP/1.1 ${key}: late writes, writes and a destroy after the end; the replay`, async () => {
      const logs = new Map<string, Log>();
      const { handle, runs } = recordedHandler(app(logs, new Map()));
      const port = await listenLoopback(createServer(handle));
      const first = await h1Post(port, key);
      expect(first.body).toBe('a-end');
      for (let i = 0; i < 50 && !logs.get(key)?.includes('done'); i++) await sleep(10);
      // As Node answers them (the same at 07aad06): the writes queued while the end was held
      // are refused after it, and their 'error' destroys the response, as without idem.
      const log = logs.get(key) as Log;
      // Node 20 emits 'finish' before the end's callback, Node 24 after it (with or without
      // idem): either order, the rest exactly.
      expect(log.slice(2, 4).sort()).toEqual(['end:ok', 'res:finish']);
      expect([...log.slice(0, 2), ...log.slice(4)]).toEqual([
        'write:true',
        'late-write:false',
        'late-write:ERR_STREAM_WRITE_AFTER_END',
        'res:error:ERR_STREAM_WRITE_AFTER_END',
        'late-end:ERR_STREAM_WRITE_AFTER_END',
        'res:error:ERR_STREAM_WRITE_AFTER_END',
        'res:close',
        'settled:ended=true,destroyed=true',
        'destroyed:true',
        'write-after:ERR_STREAM_WRITE_AFTER_END',
        'done',
      ]);
      const replay = await h1Post(port, key);
      expect(replay.body).toBe('a-end');
      expect(runs()).toBe(1);
    });
  }

  it('HTTP/1.1: the client left before the end; late calls after the held close', async () => {
    const logs = new Map<string, Log>();
    const left = deferred();
    const { handle, runs } = recordedHandler(app(logs, new Map([['gone', left.promise]])));
    const port = await listenLoopback(createServer(handle));
    await h1LeaveAfterFirst(port, 'gone');
    left.resolve();
    for (let i = 0; i < 100 && !logs.get('gone')?.includes('done'); i++) await sleep(10);
    const log = logs.get('gone') as Log;
    expect(log).toContain('write-gone:true');
    expect(log.filter((line) => line === 'res:close')).toHaveLength(1);
    expect(log).toContain('destroyed:true');
    const replay = await untilSettled(() => h1Post(port, 'gone'));
    expect(replay.body).toBe('a-b-end');
    expect(runs()).toBe(1);
  });

  it('HTTP/1.1: a record that failed; the app writes, ends and destroys afterwards', async () => {
    const logs = new Map<string, Log>();
    const failing = firstCompletionFails();
    const { handle, runs } = recordedHandler(
      async (req, res) => {
        const key = String(req.headers['idempotency-key']);
        const log: Log = [];
        logs.set(key, log);
        all[`fail:${key}`] = log;
        watch(res, log);
        res.write('a-');
        res.end('end', cb(log, 'end'));
        res.write('late', cb(log, 'late-write'));
        await afterSettled(res, log);
        log.push('done');
      },
      { store: failing },
    );
    const port = await listenLoopback(createServer(handle));
    await expect(h1Post(port, 'fail')).rejects.toThrow();
    for (let i = 0; i < 100 && !logs.get('fail')?.includes('done'); i++) await sleep(10);
    const log = logs.get('fail') as Log;
    expect(log).toContain('settled:ended=false,destroyed=true');
    expect(log.filter((line) => line === 'res:close')).toHaveLength(1);
    expect(log).not.toContain('end:ok');
    const retry = await h1Post(port, 'fail');
    expect(retry.body).toBe('a-end');
    expect(runs()).toBe(2);
  });

  it('HTTP/1.1 pipelined: the second response ends while it waits for its socket', async () => {
    const logs = new Map<string, Log>();
    const firstGo = deferred();
    const { handle, runs } = recordedHandler(async (req, res) => {
      const key = String(req.headers['idempotency-key']);
      const log: Log = [];
      logs.set(key, log);
      all[`pipelined:${key}`] = log;
      watch(res, log);
      if (key === 'p1') await firstGo.promise;
      res.end(`body-${key}`, cb(log, 'end'));
      res.write('late', cb(log, 'late-write'));
      if (key === 'p2') firstGo.resolve();
      await afterSettled(res, log);
      log.push('done');
    });
    const port = await listenLoopback(createServer(handle));
    const raw: Socket = connect(port, '127.0.0.1');
    const parts: Buffer[] = [];
    raw.on('data', (chunk: Buffer) => parts.push(chunk));
    const message = (key: string) =>
      `POST / HTTP/1.1\r\nHost: x\r\nidempotency-key: ${key}\r\ncontent-length: 1\r\n\r\nb`;
    raw.write(message('p1') + message('p2'));
    for (
      let i = 0;
      i < 200 && !(logs.get('p1')?.includes('done') && logs.get('p2')?.includes('done'));
      i++
    )
      await sleep(10);
    raw.destroy();
    const text = Buffer.concat(parts).toString();
    expect(text).toContain('body-p1');
    expect(text).toContain('body-p2');
    expect(text.indexOf('body-p1')).toBeLessThan(text.indexOf('body-p2'));
    for (const key of ['p1', 'p2']) {
      const log = logs.get(key) as Log;
      expect(log).toContain('end:ok');
      expect(log.filter((line) => line === 'res:close')).toHaveLength(1);
    }
    expect((await h1Post(port, 'p2')).body).toBe('body-p2');
    expect(runs()).toBe(2);
  });

  it('HTTP/2: late writes, writes and a destroy after the end; a client reset before it', async () => {
    const logs = new Map<string, Log>();
    const left = deferred();
    const { handle, runs } = recordedHandler(app(logs, new Map([['gone', left.promise]])));
    const port = await listenLoopback(createH2Server(handle as never) as never);
    const client = session(port);
    // node:http2's compat response destroys its stream on a write after `end` (as without
    // idem): the queued late write resets the first client's stream after its held end.
    const first = await h2(client, 'plain', 'b');
    expect(first.body.toString()).toBe('a-');
    expect(first.complete).toBe(false);
    const reset = h2ResetAfter(client, 'gone');
    await reset.closed;
    left.resolve();
    for (
      let i = 0;
      i < 300 && !(logs.get('plain')?.includes('done') && logs.get('gone')?.includes('done'));
      i++
    )
      await sleep(10);
    const plain = logs.get('plain') as Log;
    expect(plain.slice(0, 3)).toEqual([
      'write:true',
      'late-write:false',
      'late-write:ERR_STREAM_WRITE_AFTER_END',
    ]);
    expect(plain).toContain('write-after:ERR_STREAM_WRITE_AFTER_END');
    expect(plain.filter((line) => line === 'res:close')).toHaveLength(1);
    const gone = logs.get('gone') as Log;
    expect(gone).toContain('write-gone:true');
    expect(gone.filter((line) => line === 'res:close')).toHaveLength(1);
    expect((await h2(client, 'plain', 'b')).body.toString()).toBe('a-end');
    expect((await untilSettled(() => h2(client, 'gone', 'b'))).body.toString()).toBe('a-b-end');
    expect(runs()).toBe(2);
  });
});
