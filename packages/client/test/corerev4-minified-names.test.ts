/**
 * corerev4: this package's idem errors were named by their class's name (`new.target.name`),
 * which a bundle minified without keepNames changes (esbuild --minify: `Ce`): logs, and a
 * failure recorded and replayed (`Replayed failure: Ce: ...`), showed it. Core's own errors
 * are named by their marks since corerev3; these are now named by their own spelling.
 */
import { afterEach, expect, it } from 'vitest';
import { IdemClientError } from '../src/index.js';

// Renamed as a minifier renames them (esbuild --minify: `Ce`), their names put back after.
const renamed = [IdemClientError];
const names = renamed.map((cls) => cls.name);
afterEach(() => {
  for (const [i, cls] of renamed.entries()) Object.defineProperty(cls, 'name', { value: names[i] });
});

it("this package's errors keep their names when a minifier renamed their classes", () => {
  for (const cls of renamed) Object.defineProperty(cls, 'name', { value: 'Ce' });
  expect(new IdemClientError('RETRIES_EXHAUSTED', 'x').name).toBe('IdemClientError');
});

it('an app subclass of IdemClientError keeps its own name', () => {
  class AppError extends IdemClientError {}
  expect(new AppError('RETRIES_EXHAUSTED', 'x').name).toBe('AppError');
});
