import { lastEventIdForm, SseAnchors } from '@idem/core';
import { IdemClientError } from './errors.js';
import { withIdentityOf } from './response-identity.js';

/** Response header naming the generation of a live stream (set by `@idem/http`). */
export const GENERATION_HEADER = 'idempotent-generation';

/**
 * Request header saying that `Last-Event-ID` is the id's UTF-8 bytes (`utf-8`), sent with an
 * id past ASCII: `@idem/http` reads such bytes unmarked as possibly an older client's Latin-1
 * id too, and refuses a resume that both readings would place. @internal
 */
export const EVENT_ID_ENCODING_HEADER = 'idempotent-last-event-id-encoding';

/** Whether a final response is an event stream that can be resumed. @internal */
export function isResumableStream(response: Response): boolean {
  const type = response.headers.get('content-type')?.split(';', 1)[0]?.trim().toLowerCase();
  return response.ok && response.body !== null && type === 'text/event-stream';
}

/**
 * Sends the resume request: same key, `Last-Event-ID` when one was seen, the generation. It
 * must end (its connection closed, no more retries) once `cancelled` aborts: the body was
 * cancelled. @internal
 */
export type ResumeCall = (
  lastEventId: string | undefined,
  generation: string | null,
  cancelled: AbortSignal,
) => Promise<Response>;

/**
 * The `Last-Event-ID` header value of an event id: its UTF-8 bytes, each one Latin-1
 * character (a header value is a byte string), as the HTML EventSource sends it. ASCII ids are
 * unchanged. @internal
 */
export function lastEventIdHeader(id: string): string {
  let ascii = true;
  for (let i = 0; i < id.length && ascii; i++) ascii = id.charCodeAt(i) < 0x80;
  if (ascii) return id;
  let value = '';
  for (const byte of utf8.encode(id)) value += String.fromCharCode(byte);
  return value;
}

const utf8 = new TextEncoder();

/**
 * Whether an event id (in the form a header carries it) can be sent in `Last-Event-ID`: a
 * header value holds no control character but HTAB (Node's `fetch` refuses one, servers
 * answer 400), while the SSE grammar allows every one but NUL, CR and LF in an id. @internal
 */
export function sendableEventId(form: string): boolean {
  for (let i = 0; i < form.length; i++) {
    const code = form.charCodeAt(i);
    if ((code < 0x20 && code !== 0x09) || code === 0x7f) return false;
  }
  return true;
}

/**
 * `response` with a body that survives breaks: when a read fails (the connection dropped),
 * it asks for the rest with the same key and `Last-Event-ID` of the last event seen (and the
 * generation), skips what it already delivered, and goes on, so its reader gets one whole
 * stream, byte for byte. At most `maxResumes` times; then, or when the answer is not the rest
 * of the same generation, the body errors with `STREAM_NOT_RESUMABLE`. A read that fails
 * because the caller's `signal` aborted is the caller's stop, not a break: the body errors
 * with the signal's reason and nothing is resumed. Cancelling the body aborts a resume under
 * way (its connection closed, no retry after) and sends no other.
 * @internal
 */
export function resumableResponse(
  response: Response,
  resume: ResumeCall,
  maxResumes: number,
  signal?: AbortSignal,
): Response {
  const anchors = new SseAnchors();
  // The server resumes after the FIRST event with the id sent (ids may repeat: one id per
  // message over several events, or an id that comes back): where each id first ended.
  const firstEnds = new Map<string, number>();
  // The latest event seen whose id can be sent back (see `sendableEventId`), in header form:
  // a resume starts after it ('' or none: from the start), and the client skips the rest.
  let resumeFrom: string | undefined;
  const noteAnchor = (id: string, end: number) => {
    const form = lastEventIdForm(id);
    if (!firstEnds.has(form)) firstEnds.set(form, end);
    if (sendableEventId(form)) resumeFrom = form;
    return false;
  };
  const generation = response.headers.get(GENERATION_HEADER);
  let reader = (response.body as ReadableStream<Uint8Array>).getReader();
  let delivered = 0;
  let skip = 0;
  let resumes = 0;
  // Aborted by cancel(): a resume under way is aborted, and one answered after is cancelled at
  // once (its connection closed); none is sent after.
  const cancelling = new AbortController();
  const cancelled = cancelling.signal;
  const body = new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        for (;;) {
          let bytes: Uint8Array;
          try {
            const read = await reader.read();
            if (read.done) return controller.close();
            bytes = read.value;
          } catch (error) {
            if (cancelled.aborted) return;
            if (signal?.aborted) return controller.error(signal.reason);
            if (resumes >= maxResumes)
              return controller.error(
                notResumable(`${resumes} resumes did not finish the stream`, error),
              );
            resumes++;
            // After the last event seen whose id can be sent: an id with a control character
            // cannot go in a header, an earlier event's (or the start) can, and is as exact.
            const form = resumeFrom ?? '';
            let answer: Response;
            try {
              answer = await resume(form === '' ? undefined : form, generation, cancelled);
            } catch (resumeError) {
              if (cancelled.aborted) return;
              if (signal?.aborted) return controller.error(signal.reason);
              return controller.error(notResumable('the resume failed', resumeError));
            }
            if (cancelled.aborted) {
              answer.body?.cancel(cancelled.reason).catch(() => {});
              return;
            }
            const answered = answer.headers.get(GENERATION_HEADER);
            if (!(answer.ok && answer.body) || (generation !== null && answered !== generation)) {
              answer.body?.cancel().catch(() => {});
              return controller.error(
                notResumable(
                  `the resume was answered ${answer.status} (generation ${answered})`,
                  error,
                ),
              );
            }
            // The answer starts right after the first event with that id: what was delivered past
            // it is skipped. An empty id (none seen, or `id:` that reset it) asks for the whole stream.
            skip = delivered - (form === '' ? 0 : (firstEnds.get(form) ?? 0));
            reader = answer.body.getReader();
            continue;
          }
          if (skip > 0) {
            const cut = Math.min(skip, bytes.length);
            skip -= cut;
            bytes = bytes.subarray(cut);
          }
          if (bytes.length === 0) continue;
          anchors.push(bytes, noteAnchor);
          delivered += bytes.length;
          controller.enqueue(bytes);
          return;
        }
      },
      cancel(reason) {
        // A resume under way is aborted (its request, and any retry of it, ends now).
        cancelling.abort(reason);
        // The current reader: the live one, or the broken one while a resume is under way
        // (whose answer, should one still come, is then cancelled as it comes).
        return reader.cancel(reason).catch(() => {});
      },
    },
    { highWaterMark: 0 },
  );
  // The url, `redirected` and `type` of fetch's response, as for every response this client returns.
  return withIdentityOf(
    new Response(body, {
      status: response.status,
      statusText: response.statusText,
      headers: response.headers,
    }),
    response,
  );
}

function notResumable(reason: string, cause: unknown): IdemClientError {
  return new IdemClientError('STREAM_NOT_RESUMABLE', `The event stream broke and ${reason}`, {
    cause,
  });
}
