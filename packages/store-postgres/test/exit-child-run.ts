/** Runs a child script of this folder (through tsx) that prints `{"ended":…,"ok":…}` when its work ended. */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';

/**
 * Its exit code and signal (killed after 15 s), whether it printed `"ok":true`, and how long
 * after it printed `"ended"` it exited.
 */
export async function runExitChild(file: string, args: string[]) {
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', fileURLToPath(new URL(file, import.meta.url)), ...args],
    { cwd: fileURLToPath(new URL('..', import.meta.url)), stdio: ['ignore', 'pipe', 'inherit'] },
  );
  let out = '';
  let endedAt = 0;
  child.stdout?.on('data', (chunk: Buffer) => {
    out += chunk;
    if (endedAt === 0 && out.includes('"ended"')) endedAt = performance.now();
  });
  const kill = setTimeout(() => child.kill('SIGKILL'), 15_000);
  const [code, signal] = await once(child, 'exit');
  clearTimeout(kill);
  return { code, signal, ok: out.includes('"ok":true'), afterMs: performance.now() - endedAt };
}
