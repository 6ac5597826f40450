/**
 * Streamed bodies of `chunks`: each body gives the first chunk at once and the rest once
 * `open()` was called (every body made after, at once), one chunk a pull.
 */
export function gatedChunks(chunks: Uint8Array[]) {
  let open = () => {};
  const gate = new Promise<void>((resolve) => {
    open = resolve;
  });
  const body = () => {
    let n = 0;
    return new ReadableStream<Uint8Array>({
      async pull(controller) {
        if (n === 1) await gate;
        controller.enqueue(chunks[n++] as Uint8Array);
        if (n === chunks.length) controller.close();
      },
    });
  };
  return { body, open: () => open() };
}

/** An event-stream response whose body the test feeds: its controller is pushed to `feeds`. */
export function fedEventStream(feeds: ReadableStreamDefaultController<Uint8Array>[]): Response {
  return new Response(
    new ReadableStream<Uint8Array>({
      start(controller) {
        feeds.push(controller);
      },
    }),
    { headers: { 'content-type': 'text/event-stream' } },
  );
}
