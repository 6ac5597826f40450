import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/** The server running as a child process, started like `pnpm start` would. */
export interface ServerProcess {
  url: string;
  /** Sends SIGTERM and resolves with the exit code once the process has exited. */
  stop(): Promise<number | null>;
  /** Everything the process printed. */
  output(): string;
}

const appDir = fileURLToPath(new URL('../..', import.meta.url));
const entry = fileURLToPath(new URL('../main.ts', import.meta.url));

/**
 * Starts `src/main.ts` (through tsx) with `env` added to this process's environment, on a
 * free port, and resolves once it listens. Rejects with its output if it exits first.
 */
export function startServerProcess(env: Record<string, string>): Promise<ServerProcess> {
  const child: ChildProcess = spawn(process.execPath, ['--import', 'tsx', entry], {
    cwd: appDir,
    env: { ...process.env, HOST: '127.0.0.1', PORT: '0', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  const exited = new Promise<number | null>((resolve) =>
    child.once('exit', (code) => resolve(code)),
  );
  return new Promise((resolve, reject) => {
    const onData = (data: Buffer) => {
      output += data.toString();
      const match = output.match(/listening on (http:\/\/\S+)/);
      if (match) {
        child.stdout?.off('data', onData);
        child.stdout?.on('data', (more: Buffer) => {
          output += more.toString();
        });
        resolve({
          url: match[1] as string,
          stop: () => {
            child.kill('SIGTERM');
            return exited;
          },
          output: () => output,
        });
      }
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', (data: Buffer) => {
      output += data.toString();
    });
    void exited.then((code) =>
      reject(new Error(`The server exited (${code}) before listening:\n${output}`)),
    );
  });
}
