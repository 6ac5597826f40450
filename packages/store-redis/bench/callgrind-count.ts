import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';

/**
 * Instructions redis-server executed since the last call: `callgrind_control -d` (dump), read
 * the newest dump's total, then `-z` (zero). `pid`: a `valgrind --tool=callgrind
 * --callgrind-out-file=<dir>/out.%p redis-server ...`.
 */
export function callgrindInstructions(pid: number): number {
  const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
  const out = cmdline.find((arg) => arg.startsWith('--callgrind-out-file='))?.split('=')[1];
  if (!out) throw new Error('start valgrind with --callgrind-out-file=<dir>/out.%p');
  const dir = dirname(out);
  execFileSync('callgrind_control', ['-d', String(pid)], { stdio: 'ignore' });
  const newest = readdirSync(dir)
    .map((name) => join(dir, name))
    .sort((a, b) => statSync(b).mtimeMs - statSync(a).mtimeMs)[0]!;
  const found = /^(?:summary|totals): (\d+)/m.exec(readFileSync(newest, 'utf8'));
  execFileSync('callgrind_control', ['-z', String(pid)], { stdio: 'ignore' });
  return found ? Number(found[1]) : Number.NaN;
}
