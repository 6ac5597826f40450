// Runs one smoke server and stops it when the test process goes away, however it ends
// (SIGKILL, a crashed or timed-out worker included): its stdin is a pipe from the test
// process, and the pipe closes with it. `node supervise.mjs <command> [args...]`.
import { spawn } from 'node:child_process';

const [command, ...args] = process.argv.slice(2);
const child = spawn(command, args, { stdio: ['ignore', 'inherit', 'inherit'] });
let stopping = false;
const stop = () => {
  if (stopping) return;
  stopping = true;
  child.kill('SIGTERM');
  // Sooner than the test's own SIGKILL of this process (5 s), so the server never outlives it.
  setTimeout(() => child.kill('SIGKILL'), 3_000).unref();
};
process.stdin.on('end', stop).on('error', stop).resume();
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
child.on('error', (error) => {
  console.error(`${command}: ${error.message}`);
  process.exit(127);
});
child.on('exit', (code, signal) => process.exit(code ?? (signal ? 128 : 0)));
