const LF = 0x0a;
const CR = 0x0d;
/** Longest line kept to read an `id` field from; longer lines (data) are only counted. */
const MAX_ID_LINE = 1_024;
const decoder = new TextDecoder();

/**
 * Finds the resume points of a server-sent event stream as its bytes go by: an **anchor** is
 * the end of an event (the blank line that dispatches it) whose lines carried an `id` field;
 * a client that saw that event reconnects with `Last-Event-ID: <id>` and must get exactly
 * the bytes after the anchor. The server (`@idem/http`) and the client (`@idem/client`) run
 * this same scanner over the same bytes, so they agree on every anchor's byte offset.
 *
 * Lines end with CRLF, LF or CR, as the SSE grammar says. Ids are expected to be unique within
 * a stream (the first anchor with an id is the one resumed from).
 */
export class SseAnchors {
  /** Bytes scanned so far. */
  offset = 0;
  /** Id and end offset of the latest anchor, if any. */
  last: { id: string; end: number } | undefined;
  private line: number[] = [];
  private lineTooLong = false;
  private afterCr = false;
  private eventId: string | undefined;

  /**
   * Scans `bytes`; `onAnchor` is called for every anchor in them, with its id and the offset
   * just past it. Returns early (the rest unscanned, `offset` at the anchor) when it returns true.
   * @returns how many bytes of `bytes` were scanned
   */
  push(bytes: Uint8Array, onAnchor?: (id: string, end: number) => boolean | undefined): number {
    for (let i = 0; i < bytes.length; i++) {
      const byte = bytes[i] as number;
      this.offset++;
      if (this.afterCr) {
        this.afterCr = false;
        if (byte === LF) continue;
      }
      if (byte !== LF && byte !== CR) {
        if (this.line.length < MAX_ID_LINE) this.line.push(byte);
        else this.lineTooLong = true;
        continue;
      }
      this.afterCr = byte === CR;
      if (this.line.length === 0 && !this.lineTooLong) {
        const id = this.eventId;
        this.eventId = undefined;
        if (id !== undefined) {
          // After the byte that ends the event, also a CR an LF may follow: wherever the bytes
          // were cut into chunks, the server and a client put the anchor at the same offset.
          this.last = { id, end: this.offset };
          if (onAnchor?.(id, this.offset)) return i + 1;
        }
        continue;
      }
      if (!this.lineTooLong) this.field();
      this.line = [];
      this.lineTooLong = false;
    }
    return bytes.length;
  }

  private field(): void {
    const text = decoder.decode(Uint8Array.from(this.line));
    const colon = text.indexOf(':');
    const name = colon < 0 ? text : text.slice(0, colon);
    if (name !== 'id') return;
    let value = colon < 0 ? '' : text.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    // The SSE grammar ignores an id with a NUL in it.
    if (!value.includes('\u0000')) this.eventId = value;
  }
}

/**
 * An event id as it arrives in a `Last-Event-ID` request header: HTTP drops the spaces and
 * tabs around a field value, so an id is compared in this form on both sides.
 */
export function lastEventIdForm(id: string): string {
  // Loops, not `/^[ \t]+|[ \t]+$/g`: that expression backtracks over every run of spaces not
  // at the end (a 16 KB header of spaces between two characters took about 0.1 s of CPU).
  let start = 0;
  let end = id.length;
  while (start < end && isSpaceOrTab(id.charCodeAt(start))) start++;
  while (end > start && isSpaceOrTab(id.charCodeAt(end - 1))) end--;
  return start === 0 && end === id.length ? id : id.slice(start, end);
}

function isSpaceOrTab(code: number): boolean {
  return code === 32 || code === 9;
}
