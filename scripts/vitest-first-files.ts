import { BaseSequencer, type TestSpecification } from 'vitest/node';

/**
 * A vitest sequencer that starts the given files first, in the given order, then the rest as
 * vitest orders them. Vitest starts the files that took longest in its last run first, but a
 * fresh clone (CI) has no last run: it then starts the largest files first, and a package's
 * longest file (a property suite of a few lines that calls the conformance suite) started
 * last, its 90 s the tail of the whole package while the other workers sat idle.
 * @param files paths relative to the package root, e.g. `test/conformance.test.ts`
 */
export function firstFiles(files: readonly string[]): typeof BaseSequencer {
  const rank = (spec: TestSpecification) =>
    files.findIndex((file) => spec.moduleId.endsWith(`/${file}`));
  return class FirstFiles extends BaseSequencer {
    override async sort(specs: TestSpecification[]): Promise<TestSpecification[]> {
      const sorted = await super.sort(specs);
      const first = sorted.filter((spec) => rank(spec) >= 0).sort((a, b) => rank(a) - rank(b));
      return [...first, ...sorted.filter((spec) => rank(spec) < 0)];
    }
  };
}
