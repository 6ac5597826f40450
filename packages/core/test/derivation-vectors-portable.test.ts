import { vi } from 'vitest';

// Core as a runtime without node:crypto and Buffer loads it (workerd without nodejs_compat,
// Node < 20.16): the portable SHA-256 and TextEncoder must give the very same digests.
vi.mock('../src/platform.js', () => ({
  nodeBuiltin: () => undefined,
  nodeBuffer: () => undefined,
}));

const core = await import('../src/index.js');
const { describeDerivationVectors } = await import('./support/derivation-vectors.js');

describeDerivationVectors('portable SHA-256 and TextEncoder', core);
