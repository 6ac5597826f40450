import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * An OpenAI-compatible streaming upstream on loopback that counts model executions per
 * `Idempotency-Key` (the key llm-api derives from each logical request), independently of
 * the app and its store. It never replays: every call is an execution, and every answer
 * carries a fresh nonce, so a second execution shows in what clients get.
 *
 * While the gate is closed, each call streams its first piece and then waits for
 * {@link CountingUpstream.open}, so a test can hold executions at their end.
 */
export interface CountingUpstream {
  /** Base URL for `UPSTREAM_URL`, e.g. `http://127.0.0.1:1234/v1`. */
  url: string;
  /** Calls received, per idempotency key. */
  started: Map<string, number>;
  /** Calls whose whole stream (through `[DONE]`) was written, per idempotency key. */
  completed: Map<string, number>;
  /** Resolves once `n` calls in total have been received. */
  waitForCalls(n: number): Promise<void>;
  /** Opens the gate: held calls finish, later ones run straight through. */
  open(): void;
  close(): Promise<void>;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Starts the upstream; the gate starts closed when `gated`. */
export async function startCountingUpstream(
  options: { gated?: boolean } = {},
): Promise<CountingUpstream> {
  const started = new Map<string, number>();
  const completed = new Map<string, number>();
  let calls = 0;
  let release: () => void = () => undefined;
  const gate = options.gated
    ? new Promise<void>((resolve) => {
        release = resolve;
      })
    : Promise.resolve();
  const bump = (map: Map<string, number>, key: string) => map.set(key, (map.get(key) ?? 0) + 1);

  async function handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    for await (const _ of request) {
      // The body is not needed; the key identifies the logical request.
    }
    const key = String(request.headers['idempotency-key'] ?? 'none');
    calls += 1;
    bump(started, key);
    const nonce = randomBytes(6).toString('hex');
    const piece = (content: string) =>
      `data: ${JSON.stringify({ choices: [{ delta: { content } }] })}\n\n`;
    response.writeHead(200, { 'content-type': 'text/event-stream' });
    response.write(piece(`execution ${nonce} `));
    await gate;
    if (response.destroyed) return;
    response.write(piece('done.'));
    response.write(
      `data: ${JSON.stringify({ choices: [], usage: { prompt_tokens: 3, completion_tokens: 4, total_tokens: 7 } })}\n\n`,
    );
    response.end('data: [DONE]\n\n');
    bump(completed, key);
  }

  const server = createServer((request, response) => {
    handle(request, response).catch(() => response.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/v1`,
    started,
    completed,
    async waitForCalls(n) {
      for (let i = 0; i < 400 && calls < n; i += 1) await sleep(25);
      if (calls < n) throw new Error(`The upstream got ${calls} calls, expected ${n}`);
    },
    open: () => release(),
    close: async () => {
      release();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
