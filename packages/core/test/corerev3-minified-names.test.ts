/**
 * corerev3: an error's `name` was its class's name, which a bundle minified without keepNames
 * changes (esbuild --minify: `new InvalidKeyError('x').name === 'se'`): logs and the failures
 * recorded under `everythingFinal` (replayed by every instance, minified or not) showed it.
 * A core class's error is now named by its class mark, a string no minifier changes.
 */
import { expect, it } from 'vitest';
import {
  IdemError,
  InProgressError,
  InvalidInputError,
  InvalidKeyError,
  MismatchError,
  StoreUnavailableError,
} from '../src/index.js';

/** Runs `body` with the classes renamed as a minifier would, their names restored after. */
function renamed(classes: { name: string }[], body: () => void): void {
  const original = classes.map((cls) => cls.name);
  classes.forEach((cls, i) => {
    Object.defineProperty(cls, 'name', { value: `m${i}` });
  });
  try {
    body();
  } finally {
    classes.forEach((cls, i) => {
      Object.defineProperty(cls, 'name', { value: original[i] });
    });
  }
}

it("a core error's name is its class's, even when the class was renamed by a minifier", () => {
  renamed(
    [
      IdemError,
      InvalidKeyError,
      InvalidInputError,
      InProgressError,
      StoreUnavailableError,
      MismatchError,
    ],
    () => {
      expect(new InvalidKeyError('bad').name).toBe('InvalidKeyError');
      expect(new InvalidInputError('bad').name).toBe('InvalidInputError');
      expect(new InProgressError(10).name).toBe('InProgressError');
      expect(new StoreUnavailableError('down').name).toBe('StoreUnavailableError');
      expect(new IdemError('INVALID_KEY', 'x').name).toBe('IdemError');
      expect(String(new MismatchError())).toMatch(/^MismatchError: /);
    },
  );
});

it("a subclass of a core class (an app's) keeps its own name", () => {
  class AppKeyError extends InvalidKeyError {}
  expect(new AppKeyError('bad').name).toBe('AppKeyError');
  class AppError extends IdemError<'APP'> {}
  expect(new AppError('APP', 'x').name).toBe('AppError');
});
