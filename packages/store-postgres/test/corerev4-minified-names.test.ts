/**
 * corerev4: this package's idem errors were named by their class's name (`new.target.name`),
 * which a bundle minified without keepNames changes (esbuild --minify: `Ce`): logs, and a
 * failure recorded and replayed (`Replayed failure: Ce: ...`), showed it. Core's own errors
 * are named by their marks since corerev3; these are now named by their own spelling.
 */
import { afterEach, expect, it } from 'vitest';
import {
  CommitOutcomeUnknownError,
  TransactionEndedByOperationError,
  TransactionNotCommittedError,
} from '../src/index.js';

// Renamed as a minifier renames them (esbuild --minify: `Ce`), their names put back after.
const renamed = [
  TransactionNotCommittedError,
  TransactionEndedByOperationError,
  CommitOutcomeUnknownError,
];
const names = renamed.map((cls) => cls.name);
afterEach(() => {
  for (const [i, cls] of renamed.entries()) Object.defineProperty(cls, 'name', { value: names[i] });
});

it("this package's errors keep their names when a minifier renamed their classes", () => {
  for (const cls of renamed) Object.defineProperty(cls, 'name', { value: 'Ce' });
  expect(new TransactionNotCommittedError('x').name).toBe('TransactionNotCommittedError');
  expect(new TransactionEndedByOperationError({ cause: new Error('op') }).name).toBe(
    'TransactionEndedByOperationError',
  );
  expect(new CommitOutcomeUnknownError(150).name).toBe('CommitOutcomeUnknownError');
});

it('an app subclass of TransactionNotCommittedError keeps its own name', () => {
  class AppError extends TransactionNotCommittedError {}
  expect(new AppError('x').name).toBe('AppError');
});
it('an app subclass of TransactionEndedByOperationError keeps its own name', () => {
  class AppError extends TransactionEndedByOperationError {}
  expect(new AppError({ cause: new Error('op') }).name).toBe('AppError');
});
