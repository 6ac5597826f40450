import { lastEventIdForm, SseAnchors } from '@idem/core';

/** Request header of a reconnecting SSE client: the id of the last event it saw. */
export const LAST_EVENT_ID_HEADER = 'last-event-id';

/**
 * What a `Last-Event-ID` whose bytes are not UTF-8 is read as: an id no event carries (the SSE
 * grammar drops an id with a NUL, and no header value holds one), so that the resume is
 * answered as for an unknown id, never from another event. @internal
 */
export const UNREADABLE_EVENT_ID = '\u0000';

const strictUtf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/**
 * The event id a `Last-Event-ID` header value names. The id is sent as UTF-8 (as EventSource
 * and `@idem/client` send it), and a header value arrives as a byte string: Node, and Fetch
 * `Headers` (Hono, the Web handler), give each byte as one Latin-1 character. The bytes are
 * decoded as UTF-8, so that the id is the one the stream sent; ASCII is unchanged. Bytes that
 * are not UTF-8 give {@link UNREADABLE_EVENT_ID}. A value with a character past U+00FF is not
 * a byte string (it was decoded already): it is the id as it is.
 * @internal
 */
export function lastEventIdOf(value: string): string {
  let ascii = true;
  for (let i = 0; i < value.length; i++) {
    const code = value.charCodeAt(i);
    if (code > 0xff) return value;
    if (code >= 0x80) ascii = false;
  }
  if (ascii) return value;
  const bytes = new Uint8Array(value.length);
  for (let i = 0; i < value.length; i++) bytes[i] = value.charCodeAt(i);
  try {
    return strictUtf8.decode(bytes);
  } catch {
    return UNREADABLE_EVENT_ID;
  }
}

/**
 * Request header with which a client says that its `Last-Event-ID` is the id's UTF-8 bytes
 * (value `utf-8`), as `@idem/client` sends it for an id past ASCII. Without it a value past
 * ASCII may be a Latin-1 one (see {@link latin1ReadingOf}).
 */
export const LAST_EVENT_ID_ENCODING_HEADER = 'idempotent-last-event-id-encoding';

/**
 * The other id an unmarked `Last-Event-ID` value may name: its bytes read as Latin-1, one
 * character a byte, as `@idem/client` before its UTF-8 ids (and a browser's `fetch`) sends an
 * id in U+0080..U+00FF. Undefined where there is no other reading: ASCII, bytes that are not
 * UTF-8 (`utf8Reading` is {@link UNREADABLE_EVENT_ID}: that client's resume is answered as for
 * an unknown id), or a value decoded already. When both readings name events of the stream,
 * the bytes do not say which one the client saw: the resume is refused, never spliced.
 * @internal
 */
export function latin1ReadingOf(value: string, utf8Reading: string): string | undefined {
  return utf8Reading === value || utf8Reading === UNREADABLE_EVENT_ID ? undefined : value;
}

/**
 * Drops the bytes of a server-sent event stream up to and including the event whose `id`
 * field is `lastEventId` (its anchor, see `SseAnchors`); what follows passes unchanged.
 * @internal
 */
export class AnchorSkip {
  private readonly anchors = new SseAnchors();
  found = false;

  private readonly lastEventId: string;

  constructor(lastEventId: string) {
    // Compared as a header carries it (HTTP drops surrounding spaces and tabs).
    this.lastEventId = lastEventIdForm(lastEventId);
  }

  /** The part of `bytes` to send: nothing until the anchor, then everything after it. */
  take(bytes: Uint8Array): Uint8Array | undefined {
    if (this.found) return bytes;
    let hit = false;
    const scanned = this.anchors.push(bytes, (id) => {
      hit = lastEventIdForm(id) === this.lastEventId;
      return hit;
    });
    if (!hit) return undefined;
    this.found = true;
    return scanned < bytes.length ? bytes.subarray(scanned) : undefined;
  }
}

/**
 * The chunks of a recorded SSE body after the event whose id is `lastEventId`, or undefined
 * when no event of the body carries that id.
 * @internal
 */
export function chunksAfterEvent(
  chunks: readonly Uint8Array[],
  lastEventId: string,
): Uint8Array[] | undefined {
  const skip = new AnchorSkip(lastEventId);
  const rest: Uint8Array[] = [];
  for (const chunk of chunks) {
    const part = skip.take(chunk);
    if (part && part.length > 0) rest.push(part);
  }
  return skip.found ? rest : undefined;
}

/**
 * Whether the event stream `chunks` holds an event whose id is `id` (an anchor: see
 * `SseAnchors`). @internal
 */
export function hasEvent(chunks: readonly Uint8Array[], id: string): boolean {
  const skip = new AnchorSkip(id);
  for (const chunk of chunks) {
    skip.take(chunk);
    if (skip.found) return true;
  }
  return false;
}
