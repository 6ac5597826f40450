import { createServer, type IncomingMessage, type Server } from 'node:http';
import { connect } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { BodyTooLargeError, peekBody } from '../src/index.js';
import { readyForOwnMethods } from '../src/node.js';

// peekBody reads a body that is already buffered whole (its Content-Length reached, or the
// request complete) in the same tick, without listeners; any other waits for the rest. Either
// way the app reads afterwards exactly the bytes that were sent, and the request still ends.

interface Seen {
  peeked?: string;
  error?: string;
  /** 'readable' listeners peekBody left or added while it read. */
  readableListeners: number;
  /** What the app read afterwards, as its parser would ('data' until 'end'). */
  read: string;
}

let server: Server | undefined;
afterEach(async () => {
  await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
  server = undefined;
});

function readAll(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    req.on('data', (chunk: Buffer) => parts.push(chunk));
    req.on('end', () => resolve(Buffer.concat(parts).toString('utf8')));
    req.on('error', reject);
  });
}

/** A server whose handler peeks (after a microtask, as the middleware's `begin` does), then reads. */
async function start(
  limit: number,
  onRequest?: () => void,
): Promise<{ port: number; seen: Promise<Seen>[] }> {
  const seen: Promise<Seen>[] = [];
  server = createServer((req, res) => {
    onRequest?.();
    const done = (async (): Promise<Seen> => {
      await null;
      const result: Seen = { readableListeners: 0, read: '' };
      const peeking = peekBody(req, limit);
      result.readableListeners = req.listenerCount('readable');
      try {
        result.peeked = (await peeking).toString('utf8');
      } catch (error) {
        result.error = error instanceof BodyTooLargeError ? 'too large' : String(error);
        res.end('refused');
        return result;
      }
      result.read = await readAll(req);
      res.end('ok');
      return result;
    })();
    seen.push(done);
  });
  await new Promise<void>((resolve) => server?.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('no port');
  return { port: address.port, seen };
}

/** Sends `parts` in that order (each one write, the next once `before(i)` resolves); resolves with the responses. */
function send(
  port: number,
  parts: string[],
  responses: number,
  before?: (i: number) => Promise<void>,
): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    let text = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      text += chunk;
      if (text.split('HTTP/1.1 ').length - 1 >= responses && /(ok|refused)$/.test(text)) {
        socket.end();
        resolve(text);
      }
    });
    socket.on('error', reject);
    socket.on('connect', async () => {
      for (let i = 0; i < parts.length; i++) {
        if (before) await before(i);
        socket.write(parts[i] as string);
      }
    });
  });
}

const head = (length: number, extra = '') =>
  `POST /orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${length}\r\n${extra}\r\n`;

describe('peekBody of a body buffered whole', () => {
  const body = JSON.stringify({ sku: 'A-1', qty: 2 });

  it('reads a body that came with its head in the same tick, and the app reads it again whole', async () => {
    const { port, seen } = await start(1024);
    await send(port, [head(body.length) + body], 1);
    const [result] = await Promise.all(seen);
    expect(result).toEqual({ peeked: body, readableListeners: 0, read: body });
  });

  it('waits for a body whose Content-Length is not reached yet', async () => {
    let started: () => void = () => {};
    const requestSeen = new Promise<void>((resolve) => {
      started = resolve;
    });
    const { port, seen } = await start(1024, () => started());
    // The second half goes only once the handler ran on the first.
    await send(port, [head(body.length) + body.slice(0, 7), body.slice(7)], 1, (i) =>
      i === 1
        ? requestSeen.then(() => new Promise((resolve) => setImmediate(resolve)))
        : Promise.resolve(),
    );
    const [result] = await Promise.all(seen);
    expect(result?.peeked).toBe(body);
    expect(result?.read).toBe(body);
  });

  it('refuses a buffered body past the limit, as before', async () => {
    const { port, seen } = await start(5);
    await send(port, [head(body.length) + body], 1);
    const [result] = await Promise.all(seen);
    expect(result?.error).toBe('too large');
  });

  it('keeps pipelined requests apart: each peeks and reads its own body', async () => {
    const other = JSON.stringify({ sku: 'B-2', qty: 9, note: 'second' });
    const { port, seen } = await start(1024);
    await send(port, [head(body.length) + body + head(other.length) + other], 2);
    const results = await Promise.all(seen);
    expect(results.map((r) => [r.peeked, r.read])).toEqual([
      [body, body],
      [other, other],
    ]);
  });

  it('reads a chunked body sent whole, and the app reads it again', async () => {
    const { port, seen } = await start(1024);
    const chunked = `POST /orders HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n${body.length.toString(16)}\r\n${body}\r\n0\r\n\r\n`;
    await send(port, [chunked], 1);
    const [result] = await Promise.all(seen);
    expect(result?.peeked).toBe(body);
    expect(result?.read).toBe(body);
  });
});

describe('readyForOwnMethods', () => {
  class Base {
    method(): string {
      return 'base';
    }
  }
  function expressLike(): Record<string, unknown> {
    const object = new Base() as unknown as Record<string, unknown>;
    object.res = { id: 1 };
    object.other = 2;
    // As Express does: its app's prototype, given after the object was made.
    Object.setPrototypeOf(object, Object.create(Base.prototype));
    return object;
  }

  it('keeps every property, value and attribute (an existing one set again in place)', () => {
    const object = expressLike();
    const value = object.res;
    const before = Object.getOwnPropertyDescriptors(object);
    readyForOwnMethods(object, 'res');
    expect(object.res).toBe(value);
    expect(Object.getOwnPropertyDescriptors(object)).toEqual(before);
    expect(Object.getOwnPropertySymbols(object)).toEqual([]);
    object.method = () => 'own';
    expect((object.method as () => string)()).toBe('own');
  });

  it('leaves a property it may not reset alone and adds none (no existing one, or not plain)', () => {
    const object = expressLike();
    Object.defineProperty(object, 'fixed', { value: 1, enumerable: true, configurable: false });
    Object.defineProperty(object, 'computed', {
      get: () => 3,
      enumerable: true,
      configurable: true,
    });
    const before = Object.getOwnPropertyDescriptors(object);
    readyForOwnMethods(object, 'fixed');
    readyForOwnMethods(object, 'computed');
    readyForOwnMethods(object, 'absent');
    readyForOwnMethods(object);
    expect(Object.getOwnPropertyDescriptors(object)).toEqual(before);
    expect(Object.getOwnPropertySymbols(object)).toEqual([]);
    expect(Object.keys(object)).toEqual(['res', 'other', 'fixed', 'computed']);
  });

  it('a getter-only accessor of the same name up the prototype chain: the own value stays', () => {
    const object = expressLike();
    const value = object.res;
    Object.defineProperty(Object.getPrototypeOf(object), 'res', {
      get: () => 'prototype value',
      configurable: true,
    });
    const before = Object.getOwnPropertyDescriptors(object);
    expect(() => readyForOwnMethods(object, 'res')).not.toThrow();
    expect(object.res).toBe(value);
    expect(Object.getOwnPropertyDescriptors(object)).toEqual(before);
  });

  it('never throws nor changes a value on objects that refuse or lie', () => {
    const sealed = Object.seal({ res: 1 });
    readyForOwnMethods(sealed, 'res');
    readyForOwnMethods(sealed);
    expect(Object.getOwnPropertyDescriptor(sealed, 'res')).toEqual({
      value: 1,
      writable: true,
      enumerable: true,
      configurable: false,
    });
    // A Proxy whose traps refuse, throw, or store something else than asked.
    const traps: ProxyHandler<Record<PropertyKey, unknown>>[] = [
      { deleteProperty: () => false },
      {
        deleteProperty: () => {
          throw new Error('no delete');
        },
      },
      { defineProperty: () => false },
      {
        defineProperty: () => {
          throw new Error('no define');
        },
      },
      {
        defineProperty: (target, key, descriptor) =>
          Reflect.defineProperty(target, key, { ...descriptor, value: 'other' }),
      },
      {
        set: () => {
          throw new Error('no set');
        },
      },
      {
        getOwnPropertyDescriptor: () => {
          throw new Error('no descriptor');
        },
      },
      {
        isExtensible: () => {
          throw new Error('no answer');
        },
      },
    ];
    for (const handler of traps) {
      const target: Record<PropertyKey, unknown> = { res: 1, other: 2 };
      const proxy = new Proxy(target, handler);
      expect(() => readyForOwnMethods(proxy, 'res')).not.toThrow();
      expect(() => readyForOwnMethods(proxy)).not.toThrow();
      expect(target.res).toBe(1);
      expect(Object.getOwnPropertyDescriptor(target, 'res')).toEqual({
        value: 1,
        writable: true,
        enumerable: true,
        configurable: true,
      });
      expect(Object.getOwnPropertySymbols(target)).toEqual([]);
    }
  });
});
