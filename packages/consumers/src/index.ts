export type {
  AmqpChannelLike,
  AmqpConsumerOptions,
  AmqpMessageLike,
  IdempotentConsumer,
} from './amqp-consumer.js';
export { amqpMessageKey, consumeAmqp } from './amqp-consumer.js';
export type { AmqpReconnectOptions } from './amqp-reconnect.js';
export type { ConsumerLifeOptions, ConsumerStatus } from './consumer-lost.js';
export { ConsumerLostError } from './consumer-lost.js';
export { HandlerNotStartedError } from './handler-gate.js';
export type {
  ConsumerEngineOptions,
  ConsumerOptions,
  Disposition,
  MessageProcessor,
  MessageReport,
  MessageStatus,
  ProcessBounds,
} from './message-outcome.js';
export { messageProcessor } from './message-outcome.js';
export type {
  ConsumerMessagesLike,
  JetStreamConsumerLike,
  JetStreamConsumerOptions,
  JsMsgLike,
} from './nats-consumer.js';
export { consumeJetStream, jetStreamMessageKey } from './nats-consumer.js';
export { OutcomeNotKeptError } from './outcome-policy.js';
