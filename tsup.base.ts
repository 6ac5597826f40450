import { defineConfig, type Options } from 'tsup';

/**
 * The build every published package shares: ESM + CJS + declarations for Node 20, from
 * `src/index.ts` unless a package names more entries.
 */
export function packageBuild(overrides: Options = {}) {
  return defineConfig({
    entry: ['src/index.ts'],
    format: ['esm', 'cjs'],
    dts: true,
    clean: true,
    sourcemap: true,
    target: 'node20',
    // Keep `node:` specifiers as written: tsup strips them by default, and runtimes with a
    // Node compatibility layer (Deno, workerd, Bun) only resolve the prefixed names.
    removeNodeProtocol: false,
    ...overrides,
  });
}
