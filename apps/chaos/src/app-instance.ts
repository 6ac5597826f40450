import { existsSync, readlinkSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { nodeVersionOf } from './app-nodes.js';
import { type Child, rssMiB, spawnChild, waitFor } from './processes.js';

/** The built app the suite drives by default; `CHAOS_APP_ENTRY` overrides it. */
export const defaultAppEntry =
  process.env.CHAOS_APP_ENTRY ||
  fileURLToPath(new URL('../../llm-api/dist/main.js', import.meta.url));

/** One running `node apps/llm-api/dist/main.js`. */
export interface AppInstance {
  /** As the suite named it, e.g. `llm-api[redis-aof-kill#0.1]`. */
  name: string;
  /** Base URL, e.g. `http://127.0.0.1:41234`. */
  url: string;
  pid: number;
  /**
   * The version of the Node that runs it (`v24.22.3`), of the binary the kernel says the
   * process executes (`/proc/<pid>/exe`, read once it listens), not of the one asked for.
   */
  nodeVersion: string;
  /** Highest RSS seen by {@link AppInstance.sampleRss}, in MiB. */
  readonly maxRssMiB: number;
  /** Reads the current RSS and keeps the maximum. */
  sampleRss(): void;
  kill9(): Promise<void>;
  /** SIGTERM; resolves with the exit code (bounded: SIGKILL after `graceMs`). */
  term(graceMs: number): Promise<number | string>;
  output(): string;
  readonly exited: boolean;
  /**
   * Whether the suite stopped it (`kill9`, `term`): an instance that exited while this is
   * false died by itself.
   */
  readonly stoppedBySuite: boolean;
  /** Resolves with the exit code (or the signal's name) once it has exited. */
  readonly exitCode: Promise<number | string>;
}

/** The variables that pick a store or a model: never inherited from the caller's shell. */
const OWN_VARIABLES = [
  'HOST',
  'PORT',
  'REDIS_URL',
  'DYNAMODB_TABLE',
  'DYNAMODB_ENDPOINT',
  'DATABASE_URL',
  'UPSTREAM_URL',
  'UPSTREAM_API_KEY',
  'IDEM_KEY_PREFIX',
  'IDEM_LEASE_MS',
];

/**
 * Starts one app instance (`<node> <entry>`, this Node by default) with `env` and resolves
 * once it prints `listening on http://…`.
 */
export async function startApp(
  name: string,
  env: Record<string, string>,
  entry: string = defaultAppEntry,
  node: string = process.execPath,
): Promise<AppInstance> {
  if (!existsSync(entry)) {
    throw new Error(
      `${entry} is missing: build the app first (pnpm turbo run build --filter=@idem/llm-api).`,
    );
  }
  const base: NodeJS.ProcessEnv = { ...process.env };
  for (const variable of OWN_VARIABLES) delete base[variable];
  const child: Child = spawnChild(name, node, [entry], {
    env: { ...base, HOST: '127.0.0.1', PORT: '0', ...env },
  });
  let url = '';
  await waitFor(
    () => {
      if (child.done) throw new Error(`${name} exited at start:\n${child.output()}`);
      const match = child.output().match(/listening on (http:\/\/\S+)/);
      if (match) url = match[1] as string;
      return url !== '';
    },
    30_000,
    () => `${name} did not listen within 30 s:\n${child.output()}`,
    20,
  );
  let maxRss = 0;
  let stoppedBySuite = false;
  return {
    name,
    url,
    pid: child.pid,
    nodeVersion: nodeVersionOf(readlinkSync(`/proc/${child.pid}/exe`)),
    get maxRssMiB() {
      return maxRss;
    },
    sampleRss() {
      if (child.done) return;
      const rss = rssMiB(child.pid);
      if (rss !== undefined && rss > maxRss) maxRss = rss;
    },
    async kill9() {
      stoppedBySuite = true;
      child.signal('SIGKILL');
      await child.exited;
    },
    term: (graceMs) => {
      stoppedBySuite = true;
      return child.stop(graceMs);
    },
    output: () => child.output(),
    get exited() {
      return child.done;
    },
    get stoppedBySuite() {
      return stoppedBySuite;
    },
    exitCode: child.exited,
  };
}
