import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * What the upstream saw of one logical request, keyed by the id the chaos client wrote
 * into the prompt (`chaos:<id>`): the count is independent of the app and of its store.
 */
export interface UpstreamCount {
  /** Calls that reached the model. */
  started: number;
  /** Calls whose whole stream (through `[DONE]`) was written: model executions. */
  completed: number;
  /** The distinct `Idempotency-Key` headers the app sent for this logical request. */
  keys: Set<string>;
  /** The answers produced, in order (each carries a fresh nonce). */
  answers: string[];
  /** When each call started and each execution completed (ms since epoch), for CHAOS_DEBUG. */
  startedAt: number[];
  completedAt: number[];
}

/** An OpenAI-compatible streaming model on loopback that counts executions per logical id. */
export interface UpstreamModel {
  /** Base URL for the app's `UPSTREAM_URL`, e.g. `http://127.0.0.1:1234/v1`. */
  url: string;
  counts: Map<string, UpstreamCount>;
  close(): Promise<void>;
}

/** Options of {@link startUpstream}. */
export interface UpstreamOptions {
  /** Streamed pieces per answer. @default 4 */
  chunks?: number;
  /** Pause between pieces, in ms. @default 50 */
  chunkDelayMs?: number;
}

const ID = /chaos:([A-Za-z0-9._-]+)/;
/** `size:N` in the prompt pads the answer to about N bytes (memory row). */
const SIZE = /size:(\d+)/;

function readBody(request: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    let body = '';
    request.setEncoding('utf8');
    request.on('data', (chunk: string) => {
      body += chunk;
    });
    request.on('end', () => resolve(body));
    request.on('error', reject);
  });
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** The pieces of one answer: different on every execution (a nonce), so a second run shows. */
function answerPieces(id: string, execution: number, chunks: number, size: number): string[] {
  const nonce = randomBytes(6).toString('hex');
  const head = `answer to ${id}, execution ${execution}, nonce ${nonce}.`;
  const pieces = [head];
  const fill = Math.max(0, size - head.length);
  const per = Math.ceil(fill / Math.max(1, chunks - 1));
  for (let i = 1; i < chunks; i++) {
    // Random text, so a store that compresses outcomes still holds about `size` bytes.
    const filler = randomBytes(Math.ceil((per * 3) / 4)).toString('base64');
    pieces.push(per > 0 ? ` ${filler.slice(0, Math.max(0, per - 1))}` : ` part ${i}`);
  }
  return pieces;
}

/** Starts the upstream on 127.0.0.1 and a free port. */
export async function startUpstream(options: UpstreamOptions = {}): Promise<UpstreamModel> {
  const chunks = Math.max(1, options.chunks ?? 4);
  const chunkDelayMs = options.chunkDelayMs ?? 50;
  const counts = new Map<string, UpstreamCount>();

  async function handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    if (request.method !== 'POST' || !request.url?.endsWith('/chat/completions')) {
      response.writeHead(404).end();
      return;
    }
    const raw = await readBody(request);
    let prompt = '';
    try {
      const parsed = JSON.parse(raw) as { messages?: { content?: string }[] };
      prompt = parsed.messages?.map((m) => m.content ?? '').join('\n') ?? '';
    } catch {
      response.writeHead(400).end();
      return;
    }
    const id = prompt.match(ID)?.[1] ?? 'unlabelled';
    const size = Number(prompt.match(SIZE)?.[1] ?? 0);
    let count = counts.get(id);
    if (!count) {
      count = {
        started: 0,
        completed: 0,
        keys: new Set(),
        answers: [],
        startedAt: [],
        completedAt: [],
      };
      counts.set(id, count);
    }
    count.started += 1;
    count.startedAt.push(Date.now());
    const key = request.headers['idempotency-key'];
    if (typeof key === 'string') count.keys.add(key);
    const pieces = answerPieces(id, count.started, chunks, size);
    let closed = false;
    response.on('close', () => {
      closed = !response.writableFinished;
    });
    response.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    const created = Math.floor(Date.now() / 1000);
    const event = (payload: unknown) => `data: ${JSON.stringify(payload)}\n\n`;
    for (const [i, piece] of pieces.entries()) {
      if (i > 0 && chunkDelayMs > 0) await sleep(chunkDelayMs);
      if (closed || response.destroyed) return;
      response.write(
        event({
          id: `chaos-${id}`,
          object: 'chat.completion.chunk',
          created,
          model: 'chaos-upstream',
          choices: [{ index: 0, delta: { content: piece }, finish_reason: null }],
        }),
      );
    }
    const completion = pieces.join('').length;
    response.write(
      event({
        id: `chaos-${id}`,
        object: 'chat.completion.chunk',
        created,
        model: 'chaos-upstream',
        choices: [],
        usage: { prompt_tokens: 8, completion_tokens: completion, total_tokens: completion + 8 },
      }),
    );
    // An execution counts once its whole answer, [DONE] included, has been handed to the
    // socket: from here the app has everything it needs to bill and record it.
    response.end('data: [DONE]\n\n', () => {
      if (!closed) {
        count.completed += 1;
        count.answers.push(pieces[0] ?? '');
        count.completedAt.push(Date.now());
      }
    });
  }

  const server = createServer((request, response) => {
    handle(request, response).catch(() => response.destroy());
  });
  server.keepAliveTimeout = 5_000;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/v1`,
    counts,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
