import { InvalidInputError, unknownOptionMessage } from '@idem/core';
import type { ConsumerOptions } from './message-outcome.js';

/**
 * The options every consumer helper takes: the engine's (`createIdempotency`, but `wait`) and
 * the consumer's own. Typed against {@link ConsumerOptions}: an option added there and not
 * here fails the build.
 */
const SHARED_OPTION_NAMES: Record<keyof ConsumerOptions<unknown, unknown>, true> = {
  store: true,
  leaseMs: true,
  heartbeatMs: true,
  maxHoldMs: true,
  retentionMs: true,
  storeTimeoutMs: true,
  completionWaitMs: true,
  maxOutcomeBytes: true,
  isFinal: true,
  serializer: true,
  clock: true,
  onEvent: true,
  outcomeCodec: true,
  handler: true,
  key: true,
  payload: true,
  scope: true,
  retryDelayMs: true,
  onMessage: true,
};

/**
 * Refuses (`InvalidInputError`, naming the near one) an option name neither shared nor the
 * broker helper's own (`brokerNames`): a misspelt one (`scopes`, `retryDelay`, `concurency`)
 * would otherwise take its default without a word, as `@idem/client` and `@idem/http` refuse
 * them. A name set to `undefined` passes (options spread from another object).
 */
export function checkOptionNames(options: object, brokerNames: readonly string[]): void {
  const known: Record<string, true> = { ...SHARED_OPTION_NAMES };
  for (const name of brokerNames) known[name] = true;
  const message = unknownOptionMessage('', options, known, '@idem/consumers');
  if (message !== undefined) throw new InvalidInputError(message);
}
