import { lastEventIdForm, SseAnchors } from '@idem/core';

/** Request header of a reconnecting SSE client: the id of the last event it saw. */
export const LAST_EVENT_ID_HEADER = 'last-event-id';

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
