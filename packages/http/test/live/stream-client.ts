import type { StreamPlan } from './sse-app.js';

const decoder = new TextDecoder();

/** A streamed response read step by step. */
export interface OpenStream {
  response: Response;
  /** Bytes read so far. */
  bytes(): Uint8Array;
  text(): string;
  /** Reads until the text contains `needle` (or the body ends). */
  readUntil(needle: string): Promise<void>;
  /** Reads to the end; rejects when the body breaks. */
  readAll(): Promise<Uint8Array>;
  abort(): void;
}

/** POSTs `plan` to `/stream` with `key` and opens the response. */
export async function openStream(
  baseUrl: string,
  key: string,
  plan: StreamPlan,
  headers: Record<string, string> = {},
): Promise<OpenStream> {
  const controller = new AbortController();
  const response = await fetch(`${baseUrl}/stream`, {
    method: 'POST',
    headers: { 'idempotency-key': key, 'content-type': 'application/json', ...headers },
    body: JSON.stringify(plan),
    signal: controller.signal,
  });
  const parts: Uint8Array[] = [];
  const reader = response.body?.getReader();
  const all = () => {
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const part of parts) {
      out.set(part, at);
      at += part.length;
    }
    return out;
  };
  const step = async (): Promise<boolean> => {
    if (!reader) return false;
    const read = await reader.read();
    if (read.done) return false;
    parts.push(read.value);
    return true;
  };
  return {
    response,
    bytes: all,
    text: () => decoder.decode(all()),
    async readUntil(needle) {
      while (!decoder.decode(all()).includes(needle)) if (!(await step())) return;
    },
    async readAll() {
      while (await step()) {}
      return all();
    },
    abort: () => controller.abort(),
  };
}
