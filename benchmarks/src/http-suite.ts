import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';
import { FRAMEWORKS, type Framework, HTTP_PEERS, type Mode } from './http-modes.js';
import { rotate } from './measure.js';
import type { Profile } from './profile.js';
import { type Column, figure, pairedRatios, type Row, row, type SuiteResult } from './result.js';

const PACKAGE_DIR = fileURLToPath(new URL('..', import.meta.url));
const SERVER_FILE = fileURLToPath(new URL('./http-server.ts', import.meta.url));
const BODY = JSON.stringify({ sku: 'A-1', qty: 2 });
const JSON_HEADERS = { 'content-type': 'application/json' };
const OPERATIONS = ['first', 'replay'] as const;
type Operation = (typeof OPERATIONS)[number];

interface Server {
  framework: Framework;
  mode: Mode;
  url: string;
  child: ChildProcess;
}

/** Starts one server in a child process and waits for its port (30 s at most). */
async function startServer(framework: Framework, mode: Mode): Promise<Server> {
  const child = spawn(process.execPath, ['--import', 'tsx', SERVER_FILE, framework, mode], {
    cwd: PACKAGE_DIR,
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`${framework}/${mode}: no port in 30 s`)),
      30_000,
    );
    child.once('message', (message: { port?: number }) => {
      clearTimeout(timer);
      if (typeof message.port === 'number' && message.port > 0) resolve(message.port);
      else reject(new Error(`${framework}/${mode}: bad message ${JSON.stringify(message)}`));
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`${framework}/${mode}: server exited (${signal ?? code}) before listening`));
    });
  });
  return { framework, mode, url: `http://127.0.0.1:${port}`, child };
}

async function stopServer(server: Server): Promise<void> {
  if (server.child.exitCode !== null || server.child.signalCode !== null) return;
  const exited = once(server.child, 'exit');
  server.child.kill('SIGTERM');
  await exited;
}

async function post(
  server: Server,
  key: string,
): Promise<{ status: number; body: string; replayed: boolean }> {
  const response = await fetch(`${server.url}/orders`, {
    method: 'POST',
    headers: { ...JSON_HEADERS, 'idempotency-key': key },
    body: BODY,
    signal: AbortSignal.timeout(10_000),
  });
  return {
    status: response.status,
    body: await response.text(),
    replayed: response.headers.get('idempotent-replayed') === 'true',
  };
}

/**
 * Completes `keys` on the server and checks that it answers as the suite assumes: 201 every
 * time without middleware; with one, a retry gets the first response back (and idem marks it).
 */
async function prepare(server: Server, keys: readonly string[]): Promise<void> {
  const who = `${server.framework}/${server.mode}`;
  for (const key of keys) {
    const first = await post(server, key);
    if (first.status !== 201)
      throw new Error(`${who}: first request got ${first.status}: ${first.body}`);
    if (server.mode === 'plain') continue;
    const again = await post(server, key);
    if (again.status !== 201 || again.body !== first.body) {
      throw new Error(
        `${who}: the retry of ${key} was not replayed (${again.status} ${again.body})`,
      );
    }
    if (server.mode === 'idem' && !again.replayed) {
      throw new Error(`${who}: a replay without Idempotent-Replayed: true`);
    }
  }
}

/**
 * One autocannon measurement; requests per second. `first`: a new key each request
 * (autocannon's id replacement); `replay`: the connections cycle through completed keys.
 * Any error, timeout or non-2xx answer fails the run: it would not be the work we mean.
 */
async function load(
  server: Server,
  operation: Operation,
  keys: readonly string[],
  seconds: number,
  connections: number,
): Promise<number> {
  const request = (key: string) => ({
    method: 'POST' as const,
    path: '/orders',
    headers: { ...JSON_HEADERS, 'idempotency-key': key },
    body: BODY,
  });
  const result = await autocannon({
    url: server.url,
    connections,
    duration: seconds,
    // autocannon stops at the first sample tick after `duration` (1 s by default): a finer
    // tick makes short measurements as short as asked. The rate counts every completed
    // request over the whole elapsed time.
    sampleInt: 250,
    idReplacement: operation === 'first',
    requests: operation === 'first' ? [request('bench-[<id>]')] : keys.map(request),
  });
  const who = `${server.framework}/${server.mode} ${operation}`;
  if (result.errors > 0 || result.timeouts > 0 || result.non2xx > 0) {
    throw new Error(
      `${who}: ${result.errors} errors, ${result.timeouts} timeouts, ${result.non2xx} non-2xx answers`,
    );
  }
  if (result.requests.total === 0) throw new Error(`${who}: no request completed`);
  return result.requests.total / result.duration;
}

export async function runHttpSuite(
  profile: Profile,
  log: (line: string) => void,
): Promise<SuiteResult> {
  const modesOf = (framework: Framework): Mode[] => [
    'plain',
    'idem',
    ...HTTP_PEERS.filter((p) => p.framework === framework).map((p) => p.mode),
  ];
  const servers: Server[] = [];
  try {
    // Started together (each takes a couple of seconds to load); pushed as they come, so a
    // failure to start still stops the others.
    const starting = FRAMEWORKS.flatMap((framework) =>
      modesOf(framework).map((mode) =>
        startServer(framework, mode).then((server) => {
          servers.push(server);
          return server;
        }),
      ),
    );
    const started = await Promise.allSettled(starting);
    const failed = started.find((s) => s.status === 'rejected');
    if (failed) throw failed.reason;
    log(`http: ${servers.length} servers listening`);
    const serverOf = (framework: Framework, mode: Mode) =>
      servers.find((s) => s.framework === framework && s.mode === mode)!;
    const replayKeys = Array.from({ length: profile.httpReplayKeys }, (_, j) => `replay-${j}`);
    for (const server of servers) {
      await prepare(server, [...replayKeys, 'check']);
      // Warm-up (not kept): JIT, sockets.
      for (const op of OPERATIONS) {
        if (profile.httpWarmupSeconds === 0) break;
        await load(server, op, replayKeys, profile.httpWarmupSeconds, profile.httpConnections);
      }
    }

    const figures = new Map<string, number[]>();
    const at = (framework: Framework, op: Operation, mode: Mode) => `${framework}|${op}|${mode}`;
    for (let round = 0; round < profile.rounds; round++) {
      for (const framework of FRAMEWORKS) {
        for (const op of OPERATIONS) {
          // With and without alternate, starting with a different one each round.
          for (const mode of rotate(modesOf(framework), round)) {
            const rate = await load(
              serverOf(framework, mode),
              op,
              replayKeys,
              profile.httpSeconds,
              profile.httpConnections,
            );
            const key = at(framework, op, mode);
            figures.set(key, [...(figures.get(key) ?? []), rate]);
          }
        }
      }
      log(`http: round ${round + 1}/${profile.rounds} done`);
    }

    const peers = HTTP_PEERS.map((p) => p.mode);
    const columns: Column[] = [
      { header: 'without', kind: 'rate' },
      { header: 'idem', kind: 'rate' },
      ...peers.map((mode) => ({ header: mode, kind: 'rate' as const })),
      { header: 'idem ÷ without', kind: 'share' },
      ...peers.map((mode) => ({ header: `${mode} ÷ without`, kind: 'share' as const })),
      { header: 'idem ÷ best peer', kind: 'ratio' },
    ];
    const rows: Row[] = [];
    for (const framework of FRAMEWORKS) {
      for (const op of OPERATIONS) {
        const rounds = (mode: Mode) => figures.get(at(framework, op, mode));
        const without = rounds('plain');
        const idem = rounds('idem');
        const present = peers.map(rounds).filter((v): v is number[] => v !== undefined);
        // The best peer of each round, so that the ratio pairs measurements of one round.
        const bestPeer =
          present.length > 0 && idem
            ? idem.map((_, r) => Math.max(...present.map((p) => p[r]!)))
            : undefined;
        rows.push(
          row(
            [framework, op === 'first' ? 'first execution' : 'replay'],
            [
              figure(without),
              figure(idem),
              ...peers.map((mode) => figure(rounds(mode))),
              figure(pairedRatios(idem, without)),
              ...peers.map((mode) => figure(pairedRatios(rounds(mode), without))),
              figure(pairedRatios(idem, bestPeer)),
            ],
          ),
        );
      }
    }
    return {
      id: 'http',
      title: 'HTTP: POST /orders on loopback, requests/s',
      notes: [
        `autocannon in the benchmark process, ${profile.httpConnections} connections, ${profile.httpSeconds} s a measurement; each server in a child process of its own (Node ${process.version})`,
        'the endpoint: a small JSON body in, 201 with a small JSON body out; without: no idempotency middleware, the same requests (Idempotency-Key header included)',
        'idem: @idem/hono, @idem/express, @idem/fastify with their defaults and scope global (key check, fingerprint of method, path and body, the response recorded) on @idem/store-memory sized so that no measurement fills it; express-idempotency: its default in-memory adapter, Express only (— elsewhere)',
        `first execution: a new key every request; replay: the connections cycle through ${profile.httpReplayKeys} completed keys`,
        "express-idempotency's default adapter searches an array of every record for each request, so its figures fall as a run's records accumulate (the servers live for the whole suite)",
        'the load generator shares the machine with the server, so "without" is bounded by it too: the shares are upper bounds of what a faster client would see',
      ],
      labelHeaders: ['framework', 'requests'],
      columns,
      rows,
    };
  } finally {
    await Promise.all(servers.map(stopServer));
  }
}
