import { connect, createServer, type Server, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { startTcpFaultProxy, type TcpFaultProxy } from '../src/tcp-fault-proxy.js';

/** An echo server on loopback. */
async function echoServer(): Promise<{ server: Server; port: number }> {
  const server = createServer((socket) => socket.pipe(socket));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  return { server, port: typeof address === 'object' && address ? address.port : 0 };
}

/** A client that collects what comes back and whether the connection closed. */
async function client(port: number) {
  const socket: Socket = connect({ host: '127.0.0.1', port });
  const state = { received: '', closed: false };
  socket.on('data', (data) => {
    state.received += data.toString();
  });
  socket.on('error', () => undefined);
  socket.on('close', () => {
    state.closed = true;
  });
  await new Promise((resolve) => socket.once('connect', resolve));
  return { socket, state };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(check: () => boolean, ms = 2_000) {
  const deadline = Date.now() + ms;
  while (!check() && Date.now() < deadline) await sleep(10);
  return check();
}

describe('TCP fault proxy', () => {
  let proxy: TcpFaultProxy | undefined;
  let echo: Server | undefined;
  afterEach(async () => {
    await proxy?.close();
    await new Promise((resolve) => echo?.close(resolve));
  });

  it('passes traffic both ways', async () => {
    const target = await echoServer();
    echo = target.server;
    proxy = await startTcpFaultProxy(target.port);
    const c = await client(proxy.port);
    c.socket.write('hello');
    expect(await until(() => c.state.received === 'hello')).toBe(true);
    c.socket.destroy();
  });

  it('drop closes open connections and every new one', async () => {
    const target = await echoServer();
    echo = target.server;
    proxy = await startTcpFaultProxy(target.port);
    const open = await client(proxy.port);
    proxy.setMode({ kind: 'drop' });
    expect(await until(() => open.state.closed)).toBe(true);
    const late = await client(proxy.port);
    expect(await until(() => late.state.closed)).toBe(true);
    expect(proxy.stats.cut).toBe(2);
  });

  it('blackhole keeps the socket open and forwards nothing, then delivers when it heals', async () => {
    const target = await echoServer();
    echo = target.server;
    proxy = await startTcpFaultProxy(target.port);
    const open = await client(proxy.port);
    proxy.setMode({ kind: 'blackhole' });
    open.socket.write('held');
    const fresh = await client(proxy.port);
    fresh.socket.write('new');
    await sleep(300);
    expect(open.state).toEqual({ received: '', closed: false });
    expect(fresh.state).toEqual({ received: '', closed: false });
    proxy.setMode({ kind: 'pass' });
    expect(await until(() => open.state.received === 'held')).toBe(true);
    expect(await until(() => fresh.state.received === 'new')).toBe(true);
    open.socket.destroy();
    fresh.socket.destroy();
  });

  it('delay forwards every chunk later, in order', async () => {
    const target = await echoServer();
    echo = target.server;
    proxy = await startTcpFaultProxy(target.port);
    proxy.setMode({ kind: 'delay', ms: 150 });
    const c = await client(proxy.port);
    c.socket.write('a');
    c.socket.write('b');
    await sleep(100);
    expect(c.state.received).toBe('');
    expect(await until(() => c.state.received === 'ab')).toBe(true);
    c.socket.destroy();
  });

  it('dropSome(1) resets every open connection', async () => {
    const target = await echoServer();
    echo = target.server;
    proxy = await startTcpFaultProxy(target.port);
    const a = await client(proxy.port);
    const b = await client(proxy.port);
    await until(() => proxy?.stats.accepted === 2);
    expect(proxy.dropSome(1)).toBe(2);
    expect(await until(() => a.state.closed && b.state.closed)).toBe(true);
  });
});
