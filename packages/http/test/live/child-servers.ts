import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/** A test server in a child process. */
export interface ChildServer {
  url: string;
  stop(): Promise<void>;
  output(): string;
}

const entry = fileURLToPath(new URL('./redis-server-child.ts', import.meta.url));
const packageDir = fileURLToPath(new URL('../..', import.meta.url));

/** Starts `redis-server-child.ts` (through tsx) with `env`; resolves once it listens (bounded). */
export function startChildServer(env: Record<string, string>): Promise<ChildServer> {
  const child: ChildProcess = spawn(process.execPath, ['--import', 'tsx', entry], {
    cwd: packageDir,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return new Promise<ChildServer>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`The test server did not listen within 20 s:\n${output}`));
    }, 20_000);
    child.stderr?.on('data', (data: Buffer) => {
      output += data.toString();
    });
    child.stdout?.on('data', (data: Buffer) => {
      output += data.toString();
      const match = output.match(/listening on (http:\/\/\S+)/);
      if (!match) return;
      clearTimeout(timer);
      resolve({
        url: match[1] as string,
        stop: async () => {
          // A test server keeps nothing worth a graceful stop.
          if (child.exitCode === null) child.kill('SIGKILL');
          await exited;
        },
        output: () => output,
      });
    });
    void exited.then(() => {
      clearTimeout(timer);
      reject(
        new Error(
          `The test server exited before listening (needs Redis at REDIS_URL or 127.0.0.1:6379):\n${output}`,
        ),
      );
    });
  });
}
