import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { afterEach, describe, expect, it, vi } from 'vitest';

// Core finds node:crypto through process.getBuiltinModule (Node >= 20.16, 22.3). On an older
// Node 20 that `engines` admits (">=20") it takes it by a dynamic import started at load, and
// hashes with the portable SHA-256 (2.6x the CPU: 10.9 against 4.3 µs for a storage key +
// fingerprint, Node 20, loaded 2-core machine) only until that import settled. The runtime
// smoke suite runs the same on a real Node 20.10 (apps/runtime-smoke, "Node 20.10").
const engines = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'))
  .engines.node as string;

const sha256 = (data: Uint8Array) => createHash('sha256').update(data).digest('hex');

describe('the native hashing path on every Node that engines admits', () => {
  const getBuiltinModule = process.getBuiltinModule;
  afterEach(() => {
    process.getBuiltinModule = getBuiltinModule;
    vi.resetModules();
  });

  it('runs here on the native path, from the first call', async () => {
    expect(typeof process.getBuiltinModule).toBe('function');
    vi.resetModules();
    const fresh = await import('../src/sha256.js');
    expect(fresh.sha256Implementation()).toBe('node:crypto');
  });

  it('admits Node 20 releases without process.getBuiltinModule, which get node:crypto once its import settled', async () => {
    expect(engines).toMatch(/^>=\s*20(?:\.\d+)?(?:\.\d+)?$/);
    // Node 20.0–20.15, as core sees it.
    // @ts-expect-error: absent on those releases
    process.getBuiltinModule = undefined;
    vi.resetModules();
    const fresh = await import('../src/sha256.js');
    const data = new TextEncoder().encode('idem');
    // The same digest on either path.
    expect(fresh.sha256Hex(data)).toBe(sha256(data));
    await fresh.sha256Settled;
    expect(fresh.sha256Implementation()).toBe('node:crypto');
    expect(fresh.sha256Hex(data)).toBe(sha256(data));
  });

  it('tries no import where there is no Node (workerd without nodejs_compat, a browser)', async () => {
    const versions = Object.getOwnPropertyDescriptor(process, 'versions');
    // @ts-expect-error: as on a runtime without them
    process.getBuiltinModule = undefined;
    Object.defineProperty(process, 'versions', { value: {}, configurable: true });
    try {
      vi.resetModules();
      const platform = await import('../src/platform.js');
      expect(platform.importNodeBuiltin('node:crypto')).toBeUndefined();
      const fresh = await import('../src/sha256.js');
      await fresh.sha256Settled;
      expect(fresh.sha256Implementation()).toBe('portable');
    } finally {
      if (versions) Object.defineProperty(process, 'versions', versions);
    }
  });
});
