import { createServer, type IncomingMessage, request, type ServerResponse } from 'node:http';
import { createServer as createH2cServer, connect as h2Connect } from 'node:http2';
import { type AddressInfo, connect, type Socket } from 'node:net';
import { createMemoryStore } from '@idem/store-memory';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createIdempotencyHandler } from '../src/index.js';
import { recordServerResponse } from '../src/node.js';
import {
  closeAll,
  deferred,
  h1LeaveAfterFirst,
  h2,
  h2ResetAfter,
  listenLoopback,
  recordedHandler,
  session,
} from './support/h2c.js';
import { described } from './support/recorded-server.js';
import { h1Post } from './support/settlerev.js';

type Log = string[];
type Script = (res: ServerResponse, log: Log, step: (name: string) => void) => void;

const cb = (log: Log, name: string) => (error?: Error | null) =>
  log.push(
    `${name} cb ${(error as NodeJS.ErrnoException | null | undefined)?.code ?? error ?? 'ok'}`,
  );

const scripts: Record<string, Script> = {
  'destroy first, then write and end': (res, log, step) => {
    res.destroy();
    step('destroy');
    log.push(`write -> ${res.write('a', cb(log, 'write'))}`);
    step('write');
    res.end('b', cb(log, 'end'));
    step('end');
  },
  'write, destroy, write, end(cb)': (res, log, step) => {
    res.write('a');
    res.destroy();
    step('destroy');
    log.push(`write -> ${res.write('b', cb(log, 'write'))}`);
    res.end(cb(log, 'end'));
    step('end');
  },
  'writeHead, destroy(err), end(chunk, cb), destroy again': (res, log, step) => {
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.destroy(new Error('boom'));
    step('destroy');
    res.end('x', cb(log, 'end'));
    step('end');
    res.destroy();
    step('destroy2');
  },
  'destroy from a write callback': (res, log, step) => {
    res.write('a', () => {
      res.destroy();
      step('destroy');
      log.push(`write2 -> ${res.write('c', cb(log, 'write2'))}`);
      res.end();
      step('end');
    });
  },
  'destroy, then end twice': (res, log, step) => {
    res.write('a');
    res.destroy();
    res.end();
    step('end1');
    res.end('again', cb(log, 'end2'));
    step('end2');
  },
  'destroy, then writeHead(500) and end': (res, log, step) => {
    res.destroy();
    res.writeHead(500);
    step('writeHead');
    res.end('y', cb(log, 'end'));
    step('end');
  },
};

// rev19's LOW: a write after the destroy with an invalid `res.statusCode` (set after the
// destroy or before it, or given to `writeHead` after it) goes to Node unchanged, as every
// later call does (`bypass`). Before, idem's implicit head threw ERR_HTTP_INVALID_STATUS_CODE
// out of the `write`, where Node refuses the write without making a head (its callback gets
// ERR_STREAM_DESTROYED). Node itself throws from an `end()` without a chunk (it makes the
// head), and, over HTTP/2, from the status setter (ERR_HTTP2_STATUS_INVALID): idem as well.
const codeOf = (error: unknown) =>
  (error as NodeJS.ErrnoException | null | undefined)?.code ?? String(error);

/** Runs `act`, logging what it answered or threw (as the app would see it). */
function attempt(log: Log, name: string, act: () => unknown): void {
  try {
    const answer = act();
    log.push(`${name} -> ${typeof answer === 'boolean' ? answer : 'done'}`);
  } catch (error) {
    log.push(`${name} threw ${codeOf(error)}`);
  }
}

const invalid: [string, unknown][] = [
  ['99', 99],
  ['1000', 1000],
  ['NaN', Number.NaN],
  ['a string', 'abc'],
];

const setStatus = (res: ServerResponse, log: Log, status: unknown) =>
  attempt(log, 'set status', () => {
    (res as { statusCode: unknown }).statusCode = status;
  });

for (const [label, status] of invalid) {
  scripts[`destroy, status ${label}, write(cb), end(chunk, cb)`] = (res, log, step) => {
    res.destroy();
    step('destroy');
    setStatus(res, log, status);
    attempt(log, 'write', () => res.write('a', cb(log, 'write')));
    step('write');
    attempt(log, 'end', () => res.end('b', cb(log, 'end')));
    step('end');
  };
  scripts[`status ${label}, destroy, write(cb), end(cb)`] = (res, log, step) => {
    setStatus(res, log, status);
    res.destroy();
    step('destroy');
    attempt(log, 'write', () => res.write('a', cb(log, 'write')));
    step('write');
    attempt(log, 'end', () => res.end(cb(log, 'end')));
    step('end');
  };
  scripts[`status ${label}, destroy, end(chunk, cb)`] = (res, log, step) => {
    setStatus(res, log, status);
    res.destroy(new Error('gone'));
    step('destroy');
    attempt(log, 'end', () => res.end('b', cb(log, 'end')));
    step('end');
  };
  scripts[`write, status ${label}, destroy, write(cb), end(cb)`] = (res, log, step) => {
    res.write('a');
    setStatus(res, log, status);
    res.destroy();
    step('destroy');
    attempt(log, 'write', () => res.write('b', cb(log, 'write')));
    step('write');
    attempt(log, 'end', () => res.end(cb(log, 'end')));
    step('end');
  };
}
scripts['destroy, writeHead(99), write(cb), end(cb)'] = (res, log, step) => {
  res.destroy();
  step('destroy');
  attempt(log, 'writeHead', () => {
    res.writeHead(99);
  });
  step('writeHead');
  attempt(log, 'write', () => res.write('a', cb(log, 'write')));
  step('write');
  attempt(log, 'end', () => res.end(cb(log, 'end')));
  step('end');
};
scripts['destroy, writeHead(1000, headers), end(chunk, cb)'] = (res, log, step) => {
  res.destroy();
  attempt(log, 'writeHead', () => {
    res.writeHead(1000, { 'content-type': 'text/plain' });
  });
  step('writeHead');
  attempt(log, 'end', () => res.end('b', cb(log, 'end')));
  step('end');
};
scripts['status 99, destroy, writeHead(99), end(chunk, cb)'] = (res, log, step) => {
  setStatus(res, log, 99);
  res.destroy();
  attempt(log, 'writeHead', () => {
    res.writeHead(99);
  });
  step('writeHead');
  attempt(log, 'end', () => res.end('b', cb(log, 'end')));
  step('end');
};

let port = 0;
let h2Port = 0;
let runs = 0;
const logs = new Map<string, Log>();
const problems: unknown[] = [];
const onProblem = (error: unknown) => problems.push(error);
const handle = async (req: IncomingMessage, res: ServerResponse) => {
  const mode = req.headers['x-mode'];
  const name = decodeURIComponent((req.url ?? '/').slice(1));
  const log: Log = [];
  logs.set(`${mode} ${name} ${runs}`, log);
  if (mode === 'idem') {
    const decision = await idem.begin(described(req));
    if (decision.action !== 'execute') {
      log.push(
        `decision ${decision.action} ${decision.action === 'respond' ? decision.response.status : ''}`,
      );
      res.end('replayed');
      return;
    }
    recordServerResponse(res, decision.recorder);
    runs++;
  } else await new Promise((resolve) => req.resume().on('end', resolve));
  for (const event of ['close', 'finish', 'error'])
    res.on(event, (e?: Error) => log.push(`event ${event}${e ? ` ${e.message}` : ''}`));
  const step = (at: string) =>
    log.push(
      `${at}: ended=${res.writableEnded} finished=${res.writableFinished} headersSent=${res.headersSent} destroyed=${res.destroyed}`,
    );
  (scripts[name] as Script)(res, log, step);
};
const server = createServer(handle);
const h2Server = createH2cServer(handle as never);
const idem = createIdempotencyHandler<IncomingMessage>({
  store: createMemoryStore(),
  scope: 'global',
  onWarning: () => {},
});

function hit(name: string, mode: string, key: string, h2 = false): Promise<string> {
  if (h2) return hitH2(name, mode, key);
  return new Promise((resolve) => {
    const req = request({
      port,
      host: '127.0.0.1',
      method: 'POST',
      path: `/${encodeURIComponent(name)}`,
      headers: { 'idempotency-key': key, 'x-mode': mode, 'content-type': 'text/plain' },
    });
    req.on('error', (e) => resolve(`error ${(e as NodeJS.ErrnoException).code ?? e.message}`));
    req.on('response', (r) => {
      const parts: Buffer[] = [];
      r.on('data', (c: Buffer) => parts.push(c));
      r.on('error', (e) => resolve(`body error ${e.message}`));
      r.on('end', () => resolve(`${r.statusCode} ${Buffer.concat(parts)}`));
    });
    req.end('b');
  });
}

function hitH2(name: string, mode: string, key: string): Promise<string> {
  return new Promise((resolve) => {
    const client = h2Connect(`http://127.0.0.1:${h2Port}`);
    client.on('error', () => {});
    const stream = client.request({
      ':method': 'POST',
      ':path': `/${encodeURIComponent(name)}`,
      'idempotency-key': key,
      'x-mode': mode,
      'content-type': 'text/plain',
    });
    let status = 0;
    const parts: Buffer[] = [];
    const done = (what: string) => {
      client.close();
      resolve(what);
    };
    stream.on('response', (h) => {
      status = Number(h[':status']);
    });
    stream.on('data', (c: Buffer) => parts.push(c));
    stream.on('error', (e) => done(`stream error ${(e as NodeJS.ErrnoException).code}`));
    stream.on('end', () => done(`${status} ${Buffer.concat(parts)} rst=${stream.rstCode}`));
    stream.end('b');
  });
}

beforeAll(async () => {
  await new Promise<void>((resolve) => h2Server.listen(0, '127.0.0.1', resolve));
  h2Port = (h2Server.address() as AddressInfo).port;
  process.on('unhandledRejection', onProblem);
  process.on('uncaughtException', onProblem);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = (server.address() as AddressInfo).port;
});
afterAll(async () => {
  process.off('unhandledRejection', onProblem);
  process.off('uncaughtException', onProblem);
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
  await new Promise((resolve) => h2Server.close(resolve));
});

describe.each([false, true])(
  'rev19 (h2c %s): an app that acts on the response after destroying it, as plain Node',
  (h2) => {
    for (const [i, name] of Object.keys(scripts).entries()) {
      it(name, async () => {
        const key = `k-${i}-${h2}-${process.pid}`;
        const before = runs;
        const plainAnswer = await hit(name, 'plain', key, h2);
        const idemAnswer = await hit(name, 'idem', key, h2);
        await new Promise((resolve) => setTimeout(resolve, 100));
        const plain = logs.get(`plain ${name} ${before}`);
        const recorded = logs.get(`idem ${name} ${before}`);
        expect({ answer: idemAnswer, log: recorded }).toEqual({
          answer: plainAnswer,
          log: plain,
        });
        // Released, never a replay of a partial body: the retry runs the app again.
        await hit(name, 'idem', key, h2);
        expect(runs).toBe(before + 2);
        expect(problems).toEqual([]);
      });
    }
  },
);

describe('rev19: the app destroys a recorded response in the harder places', () => {
  afterEach(closeAll);
  const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
  const once = (log: string[], name: string) => {
    let calls = 0;
    return (error?: Error | null) => {
      calls++;
      log.push(`${name}#${calls} ${(error as NodeJS.ErrnoException | null)?.code ?? 'ok'}`);
    };
  };

  it('after its client left (the sink takes the writes): released, callbacks once, later calls refused', async () => {
    const log: string[] = [];
    const destroyed = deferred();
    const { handle, runs } = recordedHandler(async (_req, res) => {
      res.write('first');
      await sleep(150);
      res.write('into the sink', once(log, 'sink write'));
      res.destroy();
      res.write('after', once(log, 'late write'));
      res.end('end', once(log, 'late end'));
      log.push(`ended=${res.writableEnded}`);
      destroyed.resolve();
    });
    const port = await listenLoopback(createServer(handle));
    await h1LeaveAfterFirst(port, 'left-1');
    await destroyed.promise;
    await sleep(100);
    expect(log).toEqual(['ended=true', 'sink write#1 ok', 'late write#1 ERR_STREAM_DESTROYED']);
    // Released: a retry runs the app again (never a replay of the partial body).
    await h1Post(port, 'left-1').catch(() => undefined);
    expect(runs()).toBe(2);
  });

  it('pipelined: the second response destroyed while it waits for its socket is released; the first is recorded whole', async () => {
    const { handle, runs } = recordedHandler(async (req, res) => {
      if (req.headers['idempotency-key'] === 'pipe-a') {
        res.write('a1 ');
        await sleep(100);
        res.end('a2');
      } else {
        res.destroy();
        res.end('never', () => {});
      }
    });
    const port = await listenLoopback(createServer(handle));
    const raw = await new Promise<Socket>((resolve) => {
      const s = connect(port, '127.0.0.1', () => resolve(s));
    });
    const got: Buffer[] = [];
    raw.on('data', (c: Buffer) => got.push(c));
    raw.on('error', () => {});
    const post = (key: string) =>
      `POST / HTTP/1.1\r\nhost: x\r\nidempotency-key: ${key}\r\ncontent-length: 1\r\n\r\nb`;
    raw.write(post('pipe-a') + post('pipe-b'));
    await new Promise((resolve) => raw.on('close', resolve));
    expect(Buffer.concat(got).toString()).toContain('3\r\na1 \r\n2\r\na2\r\n0\r\n\r\n');
    expect(runs()).toBe(2);
    const replay = await h1Post(port, 'pipe-a');
    expect(replay.headers['idempotent-replayed']).toBe('true');
    expect(replay.body).toBe('a1 a2');
    await h1Post(port, 'pipe-b').catch(() => undefined);
    expect(runs()).toBe(3);
  });

  it('h2c: destroyed after its client reset the stream: released', async () => {
    const destroyed = deferred();
    const { handle, runs } = recordedHandler(async (_req, res) => {
      res.write('first');
      await sleep(150);
      res.destroy();
      res.write('after', () => {});
      destroyed.resolve();
    });
    const port = await listenLoopback(createH2cServer(handle as never));
    const client = session(port);
    await h2ResetAfter(client, 'h2-left').closed;
    await destroyed.promise;
    await sleep(50);
    await h2(client, 'h2-left', 'b');
    expect(runs()).toBe(2);
  });
});
