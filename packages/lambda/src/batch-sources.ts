import { InvalidInputError, type JsonValue } from '@idem/core';
import {
  type BatchOptions,
  type BatchResponse,
  type BatchSource,
  makeBatchHandler,
  type RecordHandler,
} from './batch.js';
import type { LambdaContextLike } from './lambda-engine.js';

/** The fields of an SQS record read here (structurally `SQSRecord` of `@types/aws-lambda`). */
export interface SqsRecordLike {
  messageId: string;
  body: string;
  eventSourceARN: string;
  attributes?: { MessageGroupId?: string };
}

/** The fields of a Kinesis record read here (`KinesisStreamRecord`). */
export interface KinesisRecordLike {
  eventID: string;
  eventSourceARN?: string;
  kinesis: { sequenceNumber: string; partitionKey: string; data: string };
}

/** The fields of a DynamoDB Streams record read here (`DynamoDBRecord`). */
export interface DynamoDbStreamRecordLike {
  eventID?: string;
  eventName?: string;
  dynamodb?: {
    SequenceNumber?: string;
    Keys?: unknown;
    NewImage?: unknown;
    OldImage?: unknown;
  };
}

const required = (value: string | undefined, what: string): string => {
  if (typeof value !== 'string' || value.length === 0)
    throw new InvalidInputError(`The record has no ${what}`);
  return value;
};

/** SQS: key `messageId`, fingerprint of the body; FIFO queues (`.fifo`) are ordered. */
export const sqsSource: BatchSource<SqsRecordLike> = {
  itemIdentifier: (record) => required(record?.messageId, 'messageId'),
  defaultKey: (record) => required(record.messageId, 'messageId'),
  defaultPayload: (record) => record.body,
  ordered: (records) =>
    records.some(
      (r) => r.eventSourceARN?.endsWith('.fifo') || r.attributes?.MessageGroupId !== undefined,
    ),
  // Sent back: the queue's redrive policy moves it to the dead-letter queue.
  rejectsPermanentFailures: false,
};

/**
 * Kinesis: key the stream's ARN and `eventID` (shard and sequence number: every stream names
 * its shards alike), fingerprint of partition key and data; ordered.
 */
export const kinesisSource: BatchSource<KinesisRecordLike> = {
  itemIdentifier: (record) => required(record?.kinesis?.sequenceNumber, 'kinesis.sequenceNumber'),
  defaultKey: (record) => {
    const id = required(record.eventID, 'eventID');
    return record.eventSourceARN ? `${record.eventSourceARN}/${id}` : id;
  },
  defaultPayload: (record) => [record.kinesis.partitionKey, record.kinesis.data],
  ordered: () => true,
  rejectsPermanentFailures: true,
};

/** DynamoDB Streams: key `eventID`, fingerprint of the event name and images; ordered. */
export const dynamoDbStreamSource: BatchSource<DynamoDbStreamRecordLike> = {
  itemIdentifier: (record) => required(record?.dynamodb?.SequenceNumber, 'dynamodb.SequenceNumber'),
  defaultKey: (record) => required(record.eventID, 'eventID'),
  defaultPayload: (record) =>
    JSON.parse(
      JSON.stringify({
        eventName: record.eventName ?? null,
        keys: record.dynamodb?.Keys ?? null,
        newImage: record.dynamodb?.NewImage ?? null,
        oldImage: record.dynamodb?.OldImage ?? null,
      }),
    ) as JsonValue,
  ordered: () => true,
  rejectsPermanentFailures: true,
};

/** A batch handler factory bound to one source. */
export type BatchHandlerFactory<TBase> = <
  TRecord extends TBase,
  TContext extends LambdaContextLike,
>(
  handler: RecordHandler<TRecord, TContext>,
  options: BatchOptions<TRecord, TContext>,
) => (event: { Records?: TRecord[] }, context: TContext) => Promise<BatchResponse>;

const forSource =
  <TBase>(source: BatchSource<TBase>): BatchHandlerFactory<TBase> =>
  (handler, options) =>
    makeBatchHandler(source as BatchSource<never>, handler, options);

/**
 * An SQS batch handler with partial failures: each record runs at most once under its key
 * (`messageId` by default), a redelivered record that completed before is skipped, and the
 * response lists only the records that failed. FIFO queues stop at the first failure and
 * report it and every later record, as AWS requires.
 */
export const makeSqsBatchHandler: BatchHandlerFactory<SqsRecordLike> = forSource(sqsSource);

/** A Kinesis batch handler (ordered: stops at the first failure); see {@link makeSqsBatchHandler}. */
export const makeKinesisBatchHandler: BatchHandlerFactory<KinesisRecordLike> =
  forSource(kinesisSource);

/** A DynamoDB Streams batch handler (ordered); see {@link makeSqsBatchHandler}. */
export const makeDynamoDbStreamBatchHandler: BatchHandlerFactory<DynamoDbStreamRecordLike> =
  forSource(dynamoDbStreamSource);
