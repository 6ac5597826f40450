import { readPlainNotRecorded } from './not-recorded.js';
import { decodeOutcome, decodeOutcomeView, type StoredOutcome } from './outcome-codec.js';
import { openSealed } from './outcome-sealing.js';
import type { ResolvedSettings } from './settings.js';

/** What {@link openStoredOutcome} needs of an engine's settings (`idempotency.settings`). */
export type OutcomeOpenSettings = Pick<
  ResolvedSettings,
  'codec' | 'maxOutcomeBytes' | 'storeTimeoutMs'
>;

/**
 * The outcome of a completed record as the engine reads it: a plain not-recorded marker
 * without the codec, anything else opened by the engine's `outcomeCodec` (when it has one)
 * for `storageKey`, then decoded. Every reader of stored outcomes (the engine's replays, a
 * live-stream reader bridging from the store) goes through this, so a sealed outcome is
 * never decoded unopened and a marker is never taken for an outcome's body. A marker comes
 * back as the marker outcome (`readNotRecorded` tells it apart).
 * @param view the body may be a view into the opened bytes (the caller only reads it), and
 *   metadata equal to `view.json` is taken as `view.meta` unparsed
 * Synchronous without a codec (it throws then), a promise with one (it rejects then).
 * @throws OutcomeCorruptError when the bytes do not open or decode;
 *   StoreUnavailableError when the codec timed out or its key service is down
 */
export function openStoredOutcome(
  settings: OutcomeOpenSettings,
  storageKey: string,
  stored: Uint8Array,
  view?: { readonly json: string; readonly meta: StoredOutcome['meta'] },
): StoredOutcome | Promise<StoredOutcome> {
  const plainMarker = readPlainNotRecorded(stored);
  if (plainMarker) return plainMarker;
  const decode = (bytes: Uint8Array) =>
    view ? decodeOutcomeView(bytes, view) : decodeOutcome(bytes);
  // Without a codec nothing waits (a replay takes no extra turn of the event loop).
  if (!settings.codec) return decode(stored);
  return openSealed(
    settings.codec,
    stored,
    { storageKey, maxBytes: settings.maxOutcomeBytes },
    settings.storeTimeoutMs,
  ).then(decode);
}
