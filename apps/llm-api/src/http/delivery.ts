/**
 * How a response leaves the server once @idem/http has wrapped it for recording.
 *
 * The recorder persists the outcome when the wrapped body is read to its end. Two rules
 * follow: (1) a JSON answer is read to its end here, so it is recorded before its first byte
 * is sent: a client whose connection drops after the commit gets a replay on retry; (2) a
 * stream is read by a pump that does not depend on the client: if the client goes away the
 * pump keeps reading, so the model finishes, the tokens are billed once and the outcome is
 * recorded for the retry to replay.
 */

/**
 * Reads a body nobody will be sent, so that it is recorded; failures were reported by the
 * recorder's events already.
 */
export async function recordUnsent(response: Response): Promise<void> {
  try {
    await response.arrayBuffer();
  } catch {
    // The recorder saw it: not recorded (released or marked), nothing to tell anyone.
  }
}

/** Reads the whole body (this is what records it) and answers with the same bytes. */
export async function deliverBuffered(response: Response): Promise<Response> {
  const bytes = await response.arrayBuffer();
  return new Response(response.status === 204 || response.status === 304 ? null : bytes, {
    status: response.status,
    statusText: response.statusText,
    headers: response.headers,
  });
}

/**
 * Passes a streamed body through while reading it independently of the client. `done`
 * settles once the source body ended (recorded) or failed.
 */
export function deliverStreamed(response: Response): {
  response: Response;
  done: Promise<void>;
  /** Ends the client's copy with an error now; the source is still read to its end. */
  cut(reason: Error): void;
} {
  const source = response.body;
  if (source === null) return { response, done: Promise.resolve(), cut: () => undefined };
  let sink: ReadableStreamDefaultController<Uint8Array> | undefined;
  let open = true;
  const out = new ReadableStream<Uint8Array>({
    start(controller) {
      sink = controller;
    },
    cancel() {
      // The client went away: stop forwarding, keep reading (see `pump`).
      open = false;
    },
  });
  const forward = (action: (controller: ReadableStreamDefaultController<Uint8Array>) => void) => {
    if (!open || !sink) return;
    try {
      action(sink);
    } catch {
      open = false;
    }
  };
  async function pump(): Promise<void> {
    const reader = (source as ReadableStream<Uint8Array>).getReader();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        forward((c) => c.enqueue(value));
      }
      forward((c) => c.close());
    } catch (error) {
      forward((c) => c.error(error));
    }
  }
  const done = pump();
  return {
    response: new Response(out, {
      status: response.status,
      statusText: response.statusText,
      headers: response.headers,
    }),
    done,
    cut(reason) {
      forward((c) => c.error(reason));
      open = false;
    },
  };
}
