import { spawn, spawnSync } from 'node:child_process';
import { readdirSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';
import { sleep, waitFor } from '../src/processes.js';

const main = fileURLToPath(new URL('../src/main.ts', import.meta.url));
const tsx = pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href;

/** Parent PID of `pid` (Linux /proc), or undefined once it is gone. */
function parentOf(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // pid (comm) state ppid ...: comm may hold spaces, so read after its closing parenthesis.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return fields[0] === 'Z' ? undefined : Number(fields[1]);
  } catch {
    return undefined;
  }
}

/** Every live descendant of `root`. */
function descendants(root: number): number[] {
  const parents = new Map<number, number>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const parent = parentOf(Number(name));
    if (parent !== undefined) parents.set(Number(name), parent);
  }
  const found: number[] = [];
  const walk = (pid: number) => {
    for (const [child, parent] of parents) {
      if (parent === pid) {
        found.push(child);
        walk(child);
      }
    }
  };
  walk(root);
  return found;
}

const alive = (pid: number) => parentOf(pid) !== undefined;

/** The suite's temp dir `pid` works in (redis-server's --dir, postgres's data dir), if any. */
function dirOf(pid: number): string | undefined {
  try {
    const cwd = readlinkSync(`/proc/${pid}/cwd`);
    return cwd.includes('idem-chaos-') ? cwd : undefined;
  } catch {
    return undefined;
  }
}

function commandOf(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ').trim();
  } catch {
    return '';
  }
}

/**
 * Starts the suite on one row, waits until its store and app instances run, kills the suite
 * with `signal`, and returns the processes it had started that are still alive 5 s later
 * (each then killed by its PID, its store dir removed, so the test leaves nothing behind).
 */
async function survivorsAfter(signal: NodeJS.Signals, row = 'redis-aof-kill'): Promise<string[]> {
  const suite = spawn(process.execPath, ['--import', tsx, main], {
    env: { ...process.env, CHAOS_PROFILE: 'short', CHAOS_ROWS: row },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const suitePid = suite.pid as number;
  let output = '';
  suite.stdout.on('data', (data: Buffer) => {
    output += data.toString();
  });
  suite.stderr.on('data', (data: Buffer) => {
    output += data.toString();
  });
  const exited = new Promise<void>((resolve) => suite.once('exit', () => resolve()));
  let started: number[] = [];
  const dirs: string[] = [];
  try {
    await waitFor(
      () => output.includes('injecting'),
      60_000,
      () => `the suite did not start its row:\n${output}`,
    );
    // The row kills its Redis and starts it again: wait until it runs in its dir (its command
    // line shows only its address; a fresh one is still in the suite's dir for a moment).
    await waitFor(
      () => {
        started = descendants(suitePid);
        return started.some((pid) => dirOf(pid) !== undefined);
      },
      10_000,
      () => `no store process under the suite:\n${output}`,
    );
    for (const pid of started) {
      const dir = dirOf(pid);
      if (dir) dirs.push(dir);
    }
    process.kill(suitePid, signal);
    await exited;
    await sleep(5_000);
    return started.filter(alive).map(commandOf);
  } finally {
    suite.kill('SIGKILL');
    for (const pid of started.filter(alive)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // Gone meanwhile.
      }
    }
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  }
}

describe.runIf(process.platform === 'linux')('a chaos suite that is killed', () => {
  it('by SIGTERM (CI cancelling, `timeout`, `kill`) leaves no store or app running', async () => {
    expect(await survivorsAfter('SIGTERM')).toEqual([]);
  }, 90_000);

  // The suite cannot catch SIGKILL: its children die with it where setpriv (util-linux) is.
  const setpriv = spawnSync('setpriv', ['--pdeathsig', 'KILL', '--', 'true']).status === 0;
  it.runIf(setpriv)(
    'by SIGKILL leaves no store or app running',
    async () => {
      expect(await survivorsAfter('SIGKILL')).toEqual([]);
    },
    90_000,
  );

  // PostgreSQL runs as another user when the suite is root (the postmaster switches uid under
  // setpriv, which must keep the death signal) and forks backends of its own: none may stay.
  it.runIf(setpriv)(
    'by SIGKILL leaves no PostgreSQL postmaster or backend running',
    async () => {
      expect(await survivorsAfter('SIGKILL', 'postgres-kill')).toEqual([]);
    },
    90_000,
  );
});
