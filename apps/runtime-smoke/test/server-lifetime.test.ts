import { spawn } from 'node:child_process';
import { createServer, type Socket } from 'node:net';
import { expect, it } from 'vitest';
import { answering, serverSpawn } from './support/runtimes.js';

// A smoke server must not outlive the test process that started it: a CI job killed at its
// time limit, or a worker killed by vitest, would otherwise leave workerd, Bun or Deno
// serving for good (seen: workerd left running after `kill -9` of vitest).

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

it('stops a server (one that even ignores SIGTERM) once the test process is killed', async () => {
  // The server: ignores SIGTERM, prints its PID, never ends by itself.
  const server = serverSpawn(process.execPath, [
    '-e',
    "process.on('SIGTERM', () => {}); console.log('listening 1 ' + process.pid); setInterval(() => {}, 1e3);",
  ]);
  // A stand-in for the test process: spawns the server as spawnServer does, relays its output.
  const standIn = spawn(
    process.execPath,
    [
      '-e',
      `const { spawn } = require('node:child_process');
       const how = JSON.parse(process.argv[1]);
       const child = spawn(how.command, how.args, how.options);
       child.stdout.pipe(process.stdout);
       child.stderr.pipe(process.stderr);`,
      JSON.stringify(server),
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  const pid = await new Promise<number>((resolve, reject) => {
    let output = '';
    const timer = setTimeout(() => reject(new Error(`no server within 30 s: ${output}`)), 30_000);
    standIn.stdout?.on('data', (chunk: Buffer) => {
      output += chunk.toString();
      const found = /listening 1 (\d+)/.exec(output)?.[1];
      if (found) {
        clearTimeout(timer);
        resolve(Number(found));
      }
    });
  });
  try {
    expect(alive(pid)).toBe(true);
    standIn.kill('SIGKILL');
    // Bounded: the supervisor sends SIGTERM at once, SIGKILL 3 s later.
    const until = Date.now() + 30_000;
    while (alive(pid) && Date.now() < until) await new Promise((r) => setTimeout(r, 100));
    expect(alive(pid), `server ${pid} still running after its test process was killed`).toBe(false);
  } finally {
    if (alive(pid)) process.kill(pid, 'SIGKILL');
  }
});

it('gives up waiting for a port that accepts connections but never answers, on time', async () => {
  const sockets: Socket[] = [];
  const silent = createServer((socket) => sockets.push(socket));
  await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
  const { port } = silent.address() as { port: number };
  try {
    const startedAt = Date.now();
    const waited = answering(`http://127.0.0.1:${port}`, 1_000)(
      undefined as never,
      () => '(no output)',
    );
    // Without a bound on each probe, the first fetch alone waits for undici's 300 s.
    const outcome = await Promise.race([
      waited.then(
        () => 'answered',
        (error: Error) => error.message,
      ),
      new Promise((resolve) => setTimeout(() => resolve('still waiting after 30 s'), 30_000)),
    ]);
    expect(outcome).toMatch(/did not answer within 1000 ms/);
    expect(Date.now() - startedAt).toBeLessThan(30_000);
  } finally {
    for (const socket of sockets) socket.destroy();
    silent.close();
  }
});
