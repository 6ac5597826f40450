import { expect, it, vi } from 'vitest';

// Core as a runtime without node:crypto and Buffer loads it (workerd without nodejs_compat;
// Node 20.0-20.15 until its import of node:crypto settled): the portable SHA-256 and
// TextEncoder must give the very same digests.
vi.mock('../src/platform.js', () => ({
  nodeBuiltin: () => undefined,
  importNodeBuiltin: () => undefined,
  nodeBuffer: () => undefined,
}));

const core = await import('../src/index.js');
const { describeDerivationVectors } = await import('./support/derivation-vectors.js');

describeDerivationVectors('portable SHA-256 and TextEncoder', core);

it('hashes there with the portable SHA-256, also once settled', async () => {
  await core.sha256Settled;
  expect(core.sha256Implementation()).toBe('portable');
});
