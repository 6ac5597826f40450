import { createServer, type ServerResponse } from 'node:http';
import { type AddressInfo, connect, type Socket } from 'node:net';
import { afterEach, expect, it } from 'vitest';
import { clientLeftSignal } from '../src/node.js';

// rev32c FINDING (LOW, bounded memory / operator noise; fixed): `clientLeftSignal` added a
// `'close'` listener to the connection for each request it watched. Under `wait`, a client
// that pipelines duplicates of a key in progress on one connection has them all waiting at
// once (Node reads on: their queued responses write nothing), each adding a listener: 11 of
// them tripped Node's MaxListenersExceededWarning on the socket (seen through Express with 30
// pipelined duplicates), and the socket's list grew with the pipeline. Now one listener a
// connection serves all of its pending signals, and is gone once none is pending.

const request = (n: number) => `GET /${n} HTTP/1.1\r\nHost: a\r\n\r\n`;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const closers: (() => void)[] = [];
afterEach(() => {
  for (const close of closers.splice(0)) close();
});

async function pipelined(count: number) {
  const watched: { signal: AbortSignal; stop: () => void }[] = [];
  const responses: ServerResponse[] = [];
  let connection: Socket | undefined;
  const server = createServer((req, res) => {
    connection = req.socket;
    responses.push(res);
    watched.push(clientLeftSignal(res));
  });
  server.listen(0, '127.0.0.1');
  await new Promise((resolve) => server.once('listening', resolve));
  closers.push(() => {
    server.closeAllConnections();
    server.close();
  });
  const client = connect((server.address() as AddressInfo).port, '127.0.0.1');
  client.on('error', () => {});
  closers.push(() => client.destroy());
  let text = '';
  for (let n = 0; n < count; n++) text += request(n);
  client.write(text);
  for (let i = 0; i < 300 && watched.length < count; i++) await sleep(10);
  expect(watched.length).toBe(count);
  return { watched, responses, connection: connection as Socket, client };
}

it('many pipelined requests watched at once add one close listener to their connection', async () => {
  const warnings: Error[] = [];
  const onWarning = (warning: Error) => warnings.push(warning);
  process.on('warning', onWarning);
  try {
    const { watched, connection, client } = await pipelined(30);
    // Node's own and the one of the signals (a listener each before: 30 more).
    expect(connection.listenerCount('close')).toBeLessThanOrEqual(3);
    await sleep(20);
    expect(warnings.filter((w) => w.name === 'MaxListenersExceededWarning')).toEqual([]);
    // Every one still learns that the client left.
    const closed = new Promise((resolve) => connection.once('close', resolve));
    client.destroy();
    await closed;
    expect(watched.filter((w) => w.signal.aborted).length).toBe(30);
  } finally {
    process.off('warning', onWarning);
  }
});

it('the connection listener is gone once every signal of the connection stopped', async () => {
  const { watched, connection } = await pipelined(5);
  const base = connection.listenerCount('close');
  for (const w of watched.slice(0, 4)) w.stop();
  expect(connection.listenerCount('close')).toBe(base);
  watched[4]?.stop();
  expect(connection.listenerCount('close')).toBe(base - 1);
  // Stopped twice: nothing more removed; a new one adds its listener again.
  watched[4]?.stop();
  expect(connection.listenerCount('close')).toBe(base - 1);
  expect(watched.some((w) => w.signal.aborted)).toBe(false);
});
