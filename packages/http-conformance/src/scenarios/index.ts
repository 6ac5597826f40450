import type { Scenario } from '../kit.js';
import { DISCONNECT_SCENARIOS } from './disconnect.js';
import { AFTER_ACQUISITION_SCENARIOS, STORE_FAULT_SCENARIOS } from './failures.js';
import { FINGERPRINT_SCENARIOS } from './fingerprints.js';
import { ISOLATION_SCENARIOS } from './isolation.js';
import { KEY_FORM_SCENARIOS } from './key-forms.js';
import { LIMIT_SCENARIOS } from './limits.js';
import { OUTCOME_SCENARIOS } from './outcomes.js';
import { PROTOCOL_SCENARIOS } from './protocol.js';
import { REPLAY_CODING_SCENARIOS } from './rv21c-replay-coding.js';

/** Every scenario of the HTTP contract, in the order the suite runs them. */
export const httpScenarios: readonly Scenario[] = [
  ...PROTOCOL_SCENARIOS,
  ...FINGERPRINT_SCENARIOS,
  ...KEY_FORM_SCENARIOS,
  ...OUTCOME_SCENARIOS,
  ...ISOLATION_SCENARIOS,
  ...DISCONNECT_SCENARIOS,
  ...AFTER_ACQUISITION_SCENARIOS,
  ...STORE_FAULT_SCENARIOS,
  ...LIMIT_SCENARIOS,
  ...REPLAY_CODING_SCENARIOS,
];
