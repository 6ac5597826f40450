import { InvalidInputError } from '@idem/core';
import type { HttpIdempotencyOptions } from './options.js';

// RFC 9110 5.6.2 token: the form of a header field name and of a method.
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

function isToken(value: unknown): value is string {
  return typeof value === 'string' && TOKEN.test(value);
}

function optionalBoolean(name: string, value: unknown): void {
  if (value !== undefined && typeof value !== 'boolean')
    throw new InvalidInputError(`${name} must be true or false`);
}

function optionalFunction(name: string, value: unknown): void {
  if (value !== undefined && typeof value !== 'function')
    throw new InvalidInputError(`${name} must be a function`);
}

function headerNames(name: string, value: unknown): void {
  if (value === undefined) return;
  if (!(Array.isArray(value) && value.every(isToken)))
    throw new InvalidInputError(`${name} must be a list of header names`);
}

/**
 * `Retry-After` seconds: a finite, non-negative number (rounded up, at least 1).
 * @internal
 */
export function retryAfterSeconds(name: string, value: unknown, fallback: number): number {
  if (value === undefined) return fallback;
  if (!(typeof value === 'number' && Number.isFinite(value) && value >= 0))
    throw new InvalidInputError(`${name} must be a finite, non-negative number of seconds`);
  return Math.max(1, Math.ceil(value));
}

/**
 * Checks the HTTP options that core does not: each would otherwise fail (or silently
 * misbehave) on every request rather than at creation.
 * @throws InvalidInputError naming the option
 * @internal
 */
export function checkHttpOptions<R>(options: HttpIdempotencyOptions<R>): void {
  const { methods, headerName, fingerprint } = options;
  if (methods !== undefined && !(Array.isArray(methods) && methods.every(isToken)))
    throw new InvalidInputError('methods must be a list of HTTP method names');
  if (headerName !== undefined && !isToken(headerName))
    throw new InvalidInputError('headerName must be a header field name');
  optionalBoolean('required', options.required);
  optionalBoolean('failOpen', options.failOpen);
  optionalFunction('isFinal', options.isFinal);
  optionalFunction('onWarning', options.onWarning);
  headerNames('recordedHeaders', options.recordedHeaders);
  if (fingerprint === undefined) return;
  if (typeof fingerprint !== 'object' || fingerprint === null)
    throw new InvalidInputError('fingerprint must be an object');
  headerNames('fingerprint.headers', fingerprint.headers);
  const { exclude } = fingerprint;
  if (
    exclude !== undefined &&
    !(
      Array.isArray(exclude) &&
      exclude.every((path) => typeof path === 'string' && path.split('.').every(Boolean))
    )
  )
    throw new InvalidInputError(
      'fingerprint.exclude must be a list of field names or dotted paths',
    );
  optionalBoolean('fingerprint.query', fingerprint.query);
  optionalFunction('fingerprint.extras', fingerprint.extras);
}
