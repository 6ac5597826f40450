import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** The built executable, as `npx idem` runs it. */
export const BIN = fileURLToPath(new URL('../dist/bin.js', import.meta.url));

export function requireBuild(): void {
  if (!existsSync(BIN))
    throw new Error(`${BIN} is missing: build the CLI first (pnpm --filter @idem/cli build)`);
}

export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

/** Spawns `node dist/bin.js ...args` and waits for it (at most 30 s). */
export function idem(...args: string[]): Promise<CliRun> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [BIN, ...args], { timeout: 30_000 }, (error, stdout, stderr) => {
      const code = error ? (error as { code?: unknown }).code : 0;
      if (typeof code !== 'number') {
        reject(error);
        return;
      }
      resolve({ code, stdout, stderr });
    });
  });
}

/** `idem ... --json`, its output parsed. */
export async function idemJson(
  ...args: string[]
): Promise<{ code: number; json: Record<string, unknown> }> {
  const run = await idem(...args, '--json');
  if (run.stdout.trim() === '') throw new Error(`no output (exit ${run.code}): ${run.stderr}`);
  return { code: run.code, json: JSON.parse(run.stdout) as Record<string, unknown> };
}
