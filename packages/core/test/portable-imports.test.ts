import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

// core runs unchanged on Bun, Deno and workerd without nodejs_compat (apps/runtime-smoke):
// no value import of a `node:` module anywhere in its sources (built-ins are looked up at
// run time through platform.ts). Type-only imports are erased and allowed.
const srcDir = join(import.meta.dirname, '..', 'src');

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) =>
    entry.isDirectory()
      ? sources(join(dir, entry.name))
      : entry.name.endsWith('.ts')
        ? [join(dir, entry.name)]
        : [],
  );
}

describe('core sources', () => {
  it('import no node: module as a value', () => {
    const offenders = sources(srcDir).flatMap((file) =>
      readFileSync(file, 'utf8')
        .split('\n')
        .filter((line) => /^\s*import\s+(?!type\b)[^;]*from\s+['"]node:/.test(line))
        .map((line) => `${file.slice(srcDir.length + 1)}: ${line.trim()}`),
    );
    expect(offenders).toEqual([]);
  });
});
