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

const REASONS = new Set<NotRecordedReason>(['too_large', 'not_serializable', 'store_full']);

function isCount(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}
