/**
 * Runs one compiled README example with node (preload.cjs first) and checks what it does:
 * a script must exit 0 and print its expected lines; a server example must answer a first
 * request, replay a retry, and refuse what its README says it refuses.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { expect } from 'vitest';
import type { ExampleSpec } from './examples.js';

const PRELOAD = fileURLToPath(new URL('../fixtures/preload.cjs', import.meta.url));
/** Bound on one example run, far above what one takes (about a second). */
const RUN_LIMIT_MS = 30_000;

interface Started {
  child: ChildProcess;
  output: () => string;
  exited: Promise<number | null>;
}

function start(node: string, appDir: string, file: string, env: NodeJS.ProcessEnv): Started {
  const child = spawn(node, ['--require', PRELOAD, file], {
    cwd: appDir,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout?.on('data', (chunk) => (output += chunk));
  child.stderr?.on('data', (chunk) => (output += chunk));
  const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
  return { child, output: () => output, exited };
}

async function within<T>(promise: Promise<T>, what: string, output: () => string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const limit = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`${what}: no result within ${RUN_LIMIT_MS} ms. Output:\n${output()}`)),
      RUN_LIMIT_MS,
    );
  });
  try {
    return await Promise.race([promise, limit]);
  } finally {
    clearTimeout(timer);
  }
}

async function listeningPort(started: Started, what: string): Promise<number> {
  const port = new Promise<number>((resolve, reject) => {
    const check = () => {
      const match = /pack-check listening (\d+)/.exec(started.output());
      if (match) resolve(Number(match[1]));
    };
    started.child.stdout?.on('data', check);
    started.exited.then((code) =>
      reject(new Error(`${what} exited (${code}) before listening:\n${started.output()}`)),
    );
    check();
  });
  return within(port, what, started.output);
}

type Send = (
  path: string,
  init?: { key?: string; account?: string; body?: string },
) => Promise<Response>;

function sender(port: number): Send {
  return (path, { key = '"order-42"', account = 'acct_1', body = '{"amount":100}' } = {}) =>
    fetch(`http://127.0.0.1:${port}${path}`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        ...(key ? { 'idempotency-key': key } : {}),
        ...(account ? { 'x-account-id': account } : {}),
      },
      body,
      signal: AbortSignal.timeout(RUN_LIMIT_MS),
    });
}

/** First call, then a retry that MUST be the replay of the same bytes. */
async function firstAndReplay(send: Send, path: string, status: number): Promise<string> {
  const first = await send(path);
  const firstBody = await first.text();
  expect({ status: first.status, body: firstBody }).toMatchObject({ status });
  expect(first.headers.get('idempotent-replayed')).toBeNull();
  const retry = await send(path);
  expect(retry.status).toBe(status);
  expect(retry.headers.get('idempotent-replayed')).toBe('true');
  expect(await retry.text()).toBe(firstBody);
  return firstBody;
}

const SERVER_CHECKS: Record<string, (send: Send) => Promise<void>> = {
  async express(send) {
    const body = JSON.parse(await firstAndReplay(send, '/charges', 201));
    expect(body).toMatchObject({ id: 1, amount: 100, fence: expect.any(Number) });
    // The README: another spelling of the path is refused with 422, never run again.
    expect((await send('/CHARGES/')).status).toBe(422);
    expect((await send('/charges', { account: '' })).status).toBe(401);
  },
  async fastify(send) {
    const body = JSON.parse(await firstAndReplay(send, '/charges', 201));
    expect(body).toMatchObject({ id: 1, fence: expect.any(Number) });
    expect((await send('/webhooks', { key: '' })).status).toBe(200);
    expect((await send('/payouts', { key: '"payout-1"' })).status).toBe(200);
    expect((await send('/charges', { account: '' })).status).toBe(401);
  },
  async hono(send) {
    const body = JSON.parse(await firstAndReplay(send, '/api/charges', 201));
    expect(body).toMatchObject({ id: 1, amount: 100, fence: expect.any(Number) });
    const sse = await firstAndReplay(
      (path, init) => send(path, { ...init, key: '"stream-1"' }),
      '/api/completions',
      200,
    );
    expect(sse).toContain('data: Hel');
    expect(sse).toContain('data: lo');
  },
  async koa(send) {
    const body = JSON.parse(await firstAndReplay(send, '/charges', 201));
    expect(body).toMatchObject({ id: 1, amount: 100, fence: expect.any(Number) });
    expect((await send('/charges', { account: '' })).status).toBe(401);
  },
  async nestjs(send) {
    const body = JSON.parse(await firstAndReplay(send, '/charges', 201));
    expect(body).toMatchObject({ id: 1, amount: 100, fence: expect.any(Number) });
    // The README's guard refuses a request without an account: 403, before any key.
    expect((await send('/charges', { account: '' })).status).toBe(403);
  },
};

/** Runs `file` (a compiled example in the scratch app) with `node` and checks it as `spec` says. */
export async function runExample(
  node: string,
  appDir: string,
  file: string,
  spec: ExampleSpec,
  env: NodeJS.ProcessEnv = {},
): Promise<void> {
  const what = `${spec.dir} (${file}, on ${node})`;
  const started = start(node, appDir, file, env);
  try {
    const check = SERVER_CHECKS[spec.driver];
    if (check) {
      const port = await listeningPort(started, what);
      await within(check(sender(port)), what, started.output);
      return;
    }
    const code = await within(started.exited, what, started.output);
    expect(code, `${what} exited ${code}:\n${started.output()}`).toBe(0);
    for (const line of spec.expectOutput ?? []) expect(started.output()).toContain(line);
  } finally {
    if (started.child.exitCode === null) {
      started.child.kill('SIGTERM');
      await started.exited;
    }
  }
}
