import middy6 from '@middy/core';
import middy7 from '@middy/core-7';
import { describe } from 'vitest';

/** `middy()` as the tests call it (Middy 6's types; Middy 7 takes the same calls). */
export type Middy = typeof middy6;

/** A Middy major the Middy tests run on. */
export interface MiddyVersion {
  major: 6 | 7;
  middy: Middy;
}

/**
 * Every Middy major of @idem/lambda's `peerDependencies` range, each at the version the
 * lockfile holds (`@middy/core`, and `@middy/core-7`, an alias): every Middy suite runs on
 * each (`describeMiddy`, `describeMiddyEach`), its title ending with `[Middy <major>]`.
 */
export const middies: MiddyVersion[] = [
  { major: 6, middy: middy6 },
  { major: 7, middy: middy7 as unknown as Middy },
];

/** The entry of {@link middies} for `major`. */
export function middyVersion(major: MiddyVersion['major']): MiddyVersion {
  const version = middies.find((each) => each.major === major);
  if (!version) throw new Error(`no Middy ${major} among the test's versions`);
  return version;
}

/** `describe(title, ...)` once per Middy major. */
export function describeMiddy(title: string, suite: (version: MiddyVersion) => void): void {
  for (const version of middies)
    describe(`${title} [Middy ${version.major}]`, () => suite(version));
}

/** `describe.each(rows)(title, ...)` once per Middy major. */
export function describeMiddyEach<T>(
  rows: readonly T[],
  title: string,
  suite: (row: T, version: MiddyVersion) => void,
): void {
  for (const version of middies) {
    describe.each(rows)(`${title} [Middy ${version.major}]`, (row) => suite(row, version));
  }
}
