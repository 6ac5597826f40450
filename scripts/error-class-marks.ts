import { createRequire } from 'node:module';
import { expect, it } from 'vitest';

/** An idem package's error class (its constructor's arguments are its own). */
export type ErrorClass = abstract new (...args: never[]) => Error;

/** One of a package's error classes, as the test imports it from the package's sources. */
export interface MarkedClass {
  name: string;
  ours: ErrorClass;
  // biome-ignore lint/suspicious/noExplicitAny: each class's own constructor arguments.
  make: (C: any) => Error;
}

/**
 * The coreerr30 tests of a package's error classes marked with core's `markErrorClass`, for the
 * test file at `testUrl` (its `import.meta.url`): an app's class of the same name built on
 * another copy of core (the CommonJS build of `@idem/core`) is not taken for the package's;
 * another copy's error (the class of the package's CommonJS build, `../dist/index.cjs`: run
 * the build first) still is, also when a minifier renamed this copy's class.
 */
export function markedClassTests(testUrl: string, classes: MarkedClass[]): void {
  const require = createRequire(testUrl);
  // The package's own dependency, resolved from the test file: its CommonJS build.
  const OtherIdemError = (
    require('@idem/core') as { IdemError: new (code: string, message: string) => Error }
  ).IdemError;
  const built = require('../dist/index.cjs') as Record<string, ErrorClass>;
  for (const { name, ours, make } of classes) {
    const theirs = built[name] as ErrorClass;
    it(`${name}: an app's class of that name on another copy of core is not this package's`, () => {
      const Namesake = class extends OtherIdemError {};
      Object.defineProperty(Namesake, 'name', { value: name });
      const impostor = new Namesake('SOME_CODE', 'an app error');
      expect(impostor).toBeInstanceOf(OtherIdemError);
      expect(impostor instanceof ours).toBe(false);
    });

    it(`${name}: another copy's (the CommonJS build) still is, minified or not`, () => {
      expect(theirs).not.toBe(ours);
      expect(make(theirs) instanceof ours).toBe(true);
      expect(make(ours) instanceof theirs).toBe(true);
      expect(make(theirs).name).toBe(name);
      try {
        // As a minifier renames it: matched by its mark, not by this name.
        Object.defineProperty(ours, 'name', { value: 'Ce' });
        expect(make(theirs) instanceof ours).toBe(true);
      } finally {
        Object.defineProperty(ours, 'name', { value: name });
      }
    });

    it(`${name}: an app's subclass of either build's is the other's too, and keeps its own name`, () => {
      for (const [base, other] of [
        [ours, theirs],
        [theirs, ours],
      ] as const) {
        // biome-ignore lint/suspicious/noExplicitAny: each class's own constructor arguments.
        const AppSubclass = class extends (base as any) {};
        Object.defineProperty(AppSubclass, 'name', { value: `App${name}` });
        const error = make(AppSubclass);
        expect(error instanceof base).toBe(true);
        expect(error instanceof other).toBe(true);
        expect(error.name).toBe(`App${name}`);
        // The other way round, by its name only: the package's own error is no app subclass.
        expect(make(other) instanceof AppSubclass).toBe(false);
        expect(make(base) instanceof AppSubclass).toBe(false);
      }
    });
  }
}
