import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';

// Core finds node:crypto through process.getBuiltinModule (Node >= 20.16, 22.3): on an older
// Node that `engines` still admits, it silently takes the portable SHA-256, measured 2.6x the
// CPU of the native one for a storage key + fingerprint (10.9 against 4.3 µs, Node 20, loaded
// 2-core machine) where the release before used node:crypto on every Node 20.
const engines = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'))
  .engines.node as string;

describe('the native hashing path on every Node that engines admits', () => {
  it('runs here on the native path', () => {
    expect(typeof process.getBuiltinModule).toBe('function');
  });

  // OPEN: engines says ">=20" but getBuiltinModule arrived in 20.16: raise the floor to
  // ">=20.16" (a user-visible change for the lead to decide; 20.x is past its end of life),
  // or find node:crypto another synchronous way on 20.0–20.15.
  it.fails('admits no Node 20 release without process.getBuiltinModule', () => {
    const floor = /^>=\s*(\d+)(?:\.(\d+))?/.exec(engines);
    expect(floor, `engines.node "${engines}"`).not.toBeNull();
    const [major, minor] = [Number(floor?.[1]), Number(floor?.[2] ?? 0)];
    expect(major > 20 || (major === 20 && minor >= 16)).toBe(true);
  });
});
