import { IdemError, InvalidInputError, markErrorClass } from '@idem/core';
import { callListener } from './listener-call.js';

/**
 * The broker ended the consumer while the application had not stopped it: RabbitMQ cancelled
 * it (`basic.cancel`, sent when its queue is deleted) or closed its channel; JetStream deleted
 * the consumer or its stream, or the pull ended with an error. Reported through
 * `onConsumerStatus`, and the answer of `consumer.closed` when the consumer has ended for good.
 */
export class ConsumerLostError extends IdemError<'CONSUMER_LOST'> {
  constructor(message: string, options?: { cause?: unknown }) {
    super('CONSUMER_LOST', message, options);
    if (new.target === ConsumerLostError) this.name = 'ConsumerLostError';
  }
}

// Another copy's (the CommonJS build) recognised by this mark, never an app's class named the same.
markErrorClass(ConsumerLostError, 'ConsumerLostError');

/**
 * What happened to the subscription itself (not to a message):
 * - `lost`: the broker ended it (`error` says how). `resubscribing` true: the consumer takes
 *   messages again by itself once the broker's consumer exists again (JetStream; RabbitMQ
 *   given `openChannel`: a channel is opened again); false: it has ended for good and
 *   `consumer.closed` answers `error` (RabbitMQ on the application's `channel`: create it
 *   again);
 * - `resumed`: after a `lost` with `resubscribing`, messages are pulled (consumed) again.
 */
export type ConsumerStatus =
  | { type: 'lost'; error: ConsumerLostError; resubscribing: boolean }
  | { type: 'resumed' };

/** The options both broker helpers take about the subscription's life. */
export interface ConsumerLifeOptions {
  /**
   * Told when the broker ends the subscription and when it resumes. What it throws, or a
   * promise it returns that rejects, is ignored. Without it a lost subscription is still
   * observable through `consumer.closed`.
   */
  onConsumerStatus?: (status: ConsumerStatus) => void;
}

/** The subscription's life as a consumer helper tracks it. */
export interface ConsumerLife {
  /** Reports a loss; `resubscribing` false ends the consumer (`closed` answers `error`). */
  lost(error: ConsumerLostError, resubscribing: boolean): void;
  /** Reports a resumption, once per loss. */
  resumed(): void;
  /** Whether a loss is reported and not resumed. */
  readonly isLost: boolean;
  /** Ends the consumer: `closed` resolves with `error` (undefined: stopped by the app). */
  end(error?: ConsumerLostError): void;
  readonly closed: Promise<ConsumerLostError | undefined>;
}

export function consumerLife(onStatus: ConsumerLifeOptions['onConsumerStatus']): ConsumerLife {
  if (onStatus !== undefined && typeof onStatus !== 'function')
    throw new InvalidInputError('onConsumerStatus must be a function');
  let settle: (error: ConsumerLostError | undefined) => void = () => {};
  const closed = new Promise<ConsumerLostError | undefined>((resolve) => {
    settle = resolve;
  });
  let isLost = false;
  let ended = false;
  const tell = (status: ConsumerStatus) => callListener(onStatus, status);
  const end = (error?: ConsumerLostError) => {
    if (ended) return;
    ended = true;
    settle(error);
  };
  return {
    lost(error, resubscribing) {
      if (ended) return;
      // One `lost` per loss, `lost` and `resumed` in turn: a JetStream pull whose consumer was
      // deleted (told) and that then ended by itself was told `lost` twice. A loss for good
      // (`closed` answers it) is told all the same.
      if (isLost && resubscribing) return;
      isLost = true;
      tell({ type: 'lost', error, resubscribing });
      if (!resubscribing) end(error);
    },
    resumed() {
      if (ended || !isLost) return;
      isLost = false;
      tell({ type: 'resumed' });
    },
    get isLost() {
      return isLost;
    },
    end,
    closed,
  };
}
