// Requests and streamed responses the Web handler tests share.
const encoder = new TextEncoder();

/** A keyed JSON POST to `http://api.test/items?x=1`. */
export function post(
  key: string,
  body: unknown = { a: 1 },
  headers: Record<string, string> = {},
): Request {
  return new Request('http://api.test/items?x=1', {
    method: 'POST',
    headers: { 'idempotency-key': key, 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
  });
}

/** A streamed 200 of `chunks`, erroring at `failAfter` when given. */
export function chunkedResponse(
  chunks: string[],
  options: { failAfter?: number; headers?: HeadersInit } = {},
): Response {
  let index = 0;
  return new Response(
    new ReadableStream<Uint8Array>({
      pull(controller) {
        if (options.failAfter !== undefined && index === options.failAfter) {
          controller.error(new Error('upstream broke'));
          return;
        }
        if (index === chunks.length) {
          controller.close();
          return;
        }
        controller.enqueue(encoder.encode(chunks[index++]));
      },
    }),
    { status: 200, headers: options.headers ?? { 'content-type': 'text/event-stream' } },
  );
}

/** Reads a response body chunk by chunk, as text. */
export async function readChunks(response: Response): Promise<string[]> {
  const out: string[] = [];
  const reader = response.body!.getReader();
  for (let read = await reader.read(); !read.done; read = await reader.read()) {
    out.push(new TextDecoder().decode(read.value));
  }
  return out;
}
