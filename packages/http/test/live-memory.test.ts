/**
 * What an in-flight live stream costs on the memory channel (measured in a child process
 * with `--expose-gc`): its body once (the recorder's capture, which the live log shares
 * instead of copying), and per attached reader a few KiB of objects, never a copy of what it
 * reads, whether it attached from the start or resumed mid-way.
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const child = fileURLToPath(new URL('./live/memory-child.ts', import.meta.url));

function measure(env: Record<string, string>): Promise<{
  body: number;
  stream: number;
  perAttached: number;
  perResumed: number;
  pieces: number;
}> {
  return new Promise((resolve, reject) => {
    const run = spawn(process.execPath, ['--expose-gc', '--import', 'tsx', child], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    run.stdout.on('data', (data: Buffer) => {
      out += data.toString();
    });
    run.stderr.on('data', (data: Buffer) => {
      out += data.toString();
    });
    const timer = setTimeout(() => run.kill('SIGKILL'), 50_000);
    run.on('exit', (code) => {
      clearTimeout(timer);
      const line = out.split('\n').find((l) => l.startsWith('{'));
      if (code === 0 && line) resolve(JSON.parse(line));
      else reject(new Error(`the measurement exited ${code}:\n${out}`));
    });
  });
}

describe('live streams: memory held on the memory channel', () => {
  it('holds a 2 MiB stream once (capture and live log shared), and no copy per reader', async () => {
    const figures = await measure({ BODY_MIB: '2', READERS: '40' });
    // Each reader holds what it read: 40 whole bodies from the start, 40 halves resumed.
    expect(figures.pieces).toBeGreaterThan(50 * figures.body);
    // The log and the capture as two copies would be 2 bodies (4 MiB) and more.
    expect(figures.stream).toBeLessThan(1.5 * figures.body);
    // A copy per reader would be 1 to 2 MiB each: objects only (streams, headers, a Response).
    expect(figures.perAttached).toBeLessThan(64 * 1024);
    expect(figures.perResumed).toBeLessThan(64 * 1024);
  }, 60_000);
});
