/**
 * lastrev: two copies of @idem/core, each in a bundle minified without keepNames (esbuild
 * --minify: an app's bundle and a library's), give one-letter names to their classes, and
 * the same name to different classes (`En` was InProgressError in one, MismatchError in the
 * other; 3 such pairs among the 13 classes in an esbuild 0.27 run). `instanceof` told another
 * copy's error by its class's name: an InProgressError of one was a MismatchError of the other.
 * The core classes now carry their names as a mark (a string no minifier changes).
 */
import { createRequire } from 'node:module';
import { expect, it } from 'vitest';
import * as esm from '../src/index.js';

const require = createRequire(import.meta.url);
const cjs = require('@idem/core') as typeof esm;

/** Runs `body` with the classes renamed as a minifier would, their names restored after. */
function renamed(pairs: [{ name: string }, string][], body: () => void): void {
  const original = pairs.map(([cls]) => cls.name);
  for (const [cls, name] of pairs) Object.defineProperty(cls, 'name', { value: name });
  try {
    body();
  } finally {
    pairs.forEach(([cls], i) => {
      Object.defineProperty(cls, 'name', { value: original[i] });
    });
  }
}

it("another minified copy's class of the same one-letter name is not this copy's", () => {
  renamed(
    [
      [esm.MismatchError, 'En'],
      [esm.IdemError, 'a'],
      [cjs.InProgressError, 'En'],
      [cjs.IdemError, 'b'],
    ],
    () => {
      const inProgress = new cjs.InProgressError(100);
      expect(inProgress instanceof esm.MismatchError).toBe(false);
      expect(esm.isIdemError(inProgress, 'IN_PROGRESS')).toBe(true);
      // Still told apart right: an InProgressError and an IdemError of this copy.
      expect(inProgress instanceof esm.InProgressError).toBe(true);
      expect(inProgress instanceof esm.IdemError).toBe(true);
      expect(new cjs.StoreFullError('full') instanceof esm.StoreFullError).toBe(true);
      expect(new cjs.StoreFullError('full') instanceof esm.LeaseLostError).toBe(false);
    },
  );
});
