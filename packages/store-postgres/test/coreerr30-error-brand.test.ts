/**
 * coreerr30: `instanceof` of this package's error classes recognised another copy's errors (the
 * CommonJS build beside the ES module one) by the name of their class only, so an app's own
 * class of the same name, built on another copy of core, was taken for this package's. The
 * classes now carry core's registered class mark, as core's own do: another copy's error is
 * recognised by it (a minified copy too), a namesake is not. Checked against the built
 * CommonJS file (run the build first).
 */
import { markedClassTests } from '../../../scripts/error-class-marks.js';
import {
  CommitOutcomeUnknownError,
  TransactionEndedByOperationError,
  TransactionNotCommittedError,
} from '../src/index.js';

markedClassTests(import.meta.url, [
  {
    name: 'TransactionNotCommittedError',
    ours: TransactionNotCommittedError,
    make: (C) => new C('not committed'),
  },
  {
    name: 'CommitOutcomeUnknownError',
    ours: CommitOutcomeUnknownError,
    make: (C) => new C(150),
  },
  {
    name: 'TransactionEndedByOperationError',
    ours: TransactionEndedByOperationError,
    make: (C) => new C({ cause: new Error('op') }),
  },
]);
