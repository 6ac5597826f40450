/**
 * Child processes of the tests that may spin a server's process (node:http2 loops forever in
 * `submitRstStream` when a stream is reset while its session still handles another's
 * RST_STREAM: Node 20.20, nodejs/node#52952): run by tsx, killed when they go silent.
 * Used by `live-readahead-interrupt.test.ts` and by @idem/fastify's
 * `fastify-h2-live-reset.test.ts`.
 */
import { spawn } from 'node:child_process';

/**
 * Runs `child` (a TypeScript file, through tsx) over `beds` (in order, env BEDS); answers its
 * JSON line per bed, by bed, and what else it printed. A bed that spins the process stops it:
 * killed once it printed nothing for 20 s after a line (30 s for the first), as it would spin,
 * and grow, forever; the beds from that one on have no line. (20 s: CI's load can hold a
 * healthy child up for seconds.)
 */
export function inChild(
  child: string,
  beds: string[],
): Promise<{ lines: Map<string, unknown>; output: string }> {
  return new Promise((resolve) => {
    const run = spawn(process.execPath, ['--import', 'tsx', child], {
      env: { ...process.env, BEDS: beds.join(',') },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    // Its start (tsx compiles the sources) may take a while on a loaded machine; a bed, not.
    let timer = setTimeout(() => run.kill('SIGKILL'), 30_000);
    const took = (data: Buffer) => {
      output += data.toString();
      clearTimeout(timer);
      timer = setTimeout(() => run.kill('SIGKILL'), 20_000);
    };
    run.stdout.on('data', took);
    run.stderr.on('data', (data: Buffer) => {
      output += data.toString();
    });
    run.on('exit', (code, signal) => {
      clearTimeout(timer);
      const lines = new Map<string, unknown>();
      for (const line of output.split('\n')) {
        if (!line.startsWith('{')) continue;
        const { bed, ...rest } = JSON.parse(line) as { bed: string };
        lines.set(bed, rest);
      }
      resolve({ lines, output: `exit ${signal ?? code}: ${output}` });
    });
  });
}
