import type { NotRecordedReason } from './errors.js';
import type { StoredOutcome } from './outcome-codec.js';

/** What a not-recorded marker says about the outcome it stands for. */
export interface NotRecordedDetails {
  /** Size of the outcome that did not fit, in bytes, when known. */
  size?: number;
  /** The limit it exceeded, in bytes, when known. */
  limit?: number;
}

/** The `meta.kind` that marks a stored outcome as a not-recorded marker. Reserved. */
export const NOT_RECORDED_KIND = 'not_recorded';

/**
 * The small final outcome recorded instead of one that could not be: metadata
 * `{ kind: 'not_recorded', reason, size?, limit? }` and an empty body. A replay of it raises
 * `OutcomeNotRecordedError`, so a retry never runs the operation a second time.
 */
export function notRecordedOutcome(
  reason: NotRecordedReason,
  details: NotRecordedDetails = {},
): StoredOutcome {
  return {
    meta: {
      kind: NOT_RECORDED_KIND,
      reason,
      ...(isCount(details.size) ? { size: details.size } : {}),
      ...(isCount(details.limit) ? { limit: details.limit } : {}),
    },
    body: new Uint8Array(),
  };
}

/** The marker's reason and details when `outcome` is a not-recorded marker, else `undefined`. */
export function readNotRecorded(
  outcome: StoredOutcome,
): (NotRecordedDetails & { reason: NotRecordedReason }) | undefined {
  const { meta } = outcome;
  if (meta.kind !== NOT_RECORDED_KIND) return undefined;
  const reason = REASONS.has(meta.reason as NotRecordedReason)
    ? (meta.reason as NotRecordedReason)
    : 'too_large';
  return {
    reason,
    ...(isCount(meta.size) ? { size: meta.size } : {}),
    ...(isCount(meta.limit) ? { limit: meta.limit } : {}),
  };
}

// At most 16 characters each (see `readPlainNotRecorded`). A reason added here is read as
// `too_large` by a build that predates it when sealed (see `readNotRecorded`); plain, such a
// build answers OUTCOME_CORRUPT for it: never a replay, never a second run either way.
const REASONS = new Set<NotRecordedReason>([
  'too_large',
  'not_serializable',
  'store_full',
  'answered_outside',
]);

/** The reasons a not-recorded marker may give, in the order they were added. @internal */
export const NOT_RECORDED_REASONS: readonly NotRecordedReason[] = [...REASONS];

// "IDN" (idem, not recorded) + version 1, then the reason in ASCII. The encoding starts with
// "IDM" + 1 and the sealed envelope with "IDS" + 1, so none of the three is mistaken for another.
const PLAIN_MARKER_MAGIC = 'IDN\x01';
const PLAIN_MARKERS = new Map<NotRecordedReason, Uint8Array>(
  [...REASONS].map((reason) => [
    reason,
    Uint8Array.from(PLAIN_MARKER_MAGIC + reason, (c) => c.charCodeAt(0)),
  ]),
);

/**
 * The not-recorded marker as stored when the outcome codec cannot seal it: `IDN\x01` and the
 * reason in ASCII, nothing else (no size, no limit, no user data), so it is written and read
 * without the codec. The engine recognises exactly these byte strings (one a reason) before opening
 * an outcome; they only ever answer `OUTCOME_NOT_RECORDED`, never a replay.
 * @internal
 */
export function plainNotRecorded(reason: NotRecordedReason): Uint8Array {
  return (PLAIN_MARKERS.get(reason) as Uint8Array).slice();
}

/**
 * The marker outcome when `stored` is exactly one of the plain markers of
 * {@link plainNotRecorded}, else `undefined` (any other bytes go to the codec as before, so
 * a tampered sealed outcome stays `OUTCOME_CORRUPT`).
 * @internal
 */
export function readPlainNotRecorded(stored: Uint8Array): StoredOutcome | undefined {
  if (stored.length > 4 + 16 || stored[2] !== 0x4e) return undefined;
  for (const [reason, marker] of PLAIN_MARKERS) {
    if (marker.length === stored.length && marker.every((byte, i) => stored[i] === byte))
      return notRecordedOutcome(reason);
  }
  return undefined;
}

/** Whether `reason` is one of the not-recorded reasons (see `NotRecordedReason`). @internal */
export function isNotRecordedReason(reason: unknown): reason is NotRecordedReason {
  return REASONS.has(reason as NotRecordedReason);
}

function isCount(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

/**
 * The errors the engine threw for an outcome it could not store (`OUTCOME_TOO_LARGE`,
 * `OUTCOME_NOT_RECORDED`, `STORE_FULL`) whose not-recorded marker did not land either, with
 * the marker write's own error. Such an error does not mean "a marker answers every retry":
 * the key may be left in progress (its lease runs out, or the write goes on in the background).
 */
const markerFailures = new WeakMap<object, { failure: unknown }>();

/** Notes that the marker for `error`'s outcome was not written (`failure` is why). @internal */
export function noteMarkerFailure(error: object, failure: unknown): void {
  markerFailures.set(error, { failure });
}

/**
 * `{ failure }` when `error` was thrown by the engine for an outcome it could not store and
 * the not-recorded marker meant to stand for it did not land either (`failure` is the marker
 * write's error: the store was unavailable, the lease was lost...), else `undefined`: an
 * `OUTCOME_TOO_LARGE` / `OUTCOME_NOT_RECORDED` error without it had its marker written, and
 * every retry of the key is answered `OUTCOME_NOT_RECORDED`. For integrations that settle
 * something (a message's ack) on that marker.
 * @internal
 */
export function markerFailureOf(error: unknown): { failure: unknown } | undefined {
  return typeof error === 'object' && error !== null ? markerFailures.get(error) : undefined;
}
