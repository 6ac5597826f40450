import { IdemError } from './errors.js';
import type { StoredOutcome } from './outcome-codec.js';

/**
 * What the engine records for a value under a custom serializer: the serializer's outcome,
 * its metadata under `value`.
 * @internal
 */
export function wrapValue(outcome: StoredOutcome): StoredOutcome {
  return { meta: { kind: 'value', value: outcome.meta }, body: outcome.body };
}

/**
 * What the engine records for a failure that the outcome policy made final: its name,
 * message and code (replayed as `ReplayedFailureError`), an empty body.
 * @internal
 */
export function failureOutcome(error: unknown): StoredOutcome {
  const failure: { name: string; message: string; code?: string } =
    error instanceof Error
      ? { name: error.name, message: error.message }
      : { name: 'Error', message: String(error) };
  if (
    error instanceof IdemError ||
    (error instanceof Error && typeof (error as { code?: unknown }).code === 'string')
  ) {
    failure.code = (error as unknown as { code: string }).code;
  }
  return { meta: { kind: 'failure', failure }, body: new Uint8Array() };
}
