import type { AttributeValue } from '@aws-sdk/client-dynamodb';
import type { StoreErrorRules } from '@idem/core';

/** A failed condition, with the item that failed it when `ALL_OLD` was asked for. */
export interface ConditionFailure {
  name: 'ConditionalCheckFailedException';
  Item?: Record<string, AttributeValue>;
}

/**
 * True for DynamoDB's "condition not met" answer. Checked by name rather than `instanceof`,
 * so that a client from another copy of the SDK is recognised too.
 */
export function isConditionFailure(error: unknown): error is ConditionFailure {
  return (
    typeof error === 'object' &&
    error !== null &&
    (error as { name?: unknown }).name === 'ConditionalCheckFailedException'
  );
}

/** True when the SDK error has this exception name. */
export function isNamed(error: unknown, name: string): boolean {
  return typeof error === 'object' && error !== null && (error as { name?: unknown }).name === name;
}

/** `name: message` of an SDK error, for messages. */
export function describeError(error: unknown): string {
  if (error instanceof Error)
    return error.name && error.name !== 'Error' ? `${error.name}: ${error.message}` : error.message;
  return String(error);
}

/**
 * Every SDK failure (throttling, network, validation, access) becomes a
 * `StoreUnavailableError` with the SDK's error as `cause`; idem's own errors pass through.
 */
export const DYNAMODB_ERRORS: StoreErrorRules = { service: 'DynamoDB', describe: describeError };
