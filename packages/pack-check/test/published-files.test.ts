/**
 * publint and Are The Types Wrong on each tarball exactly as it would be published: every
 * entry point resolves, for every resolution mode the package claims, to types that match.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { checkPackage, createPackageFromTarballData } from '@arethetypeswrong/core';
import { publint } from 'publint';
import { formatMessage } from 'publint/utils';
import { afterAll, describe, expect, test } from 'vitest';
import { packAll } from '../src/scratch-app.js';

const PACKAGES_DIR = fileURLToPath(new URL('../../', import.meta.url));
const work = mkdtempSync(join(tmpdir(), 'idem-pack-files-'));
const packages = packAll(PACKAGES_DIR, work);
/** Packages that ship ESM only: vitest, which they run in, cannot be `require`d. */
const ESM_ONLY = new Set(['@idem/store-conformance', '@idem/http-conformance']);

afterAll(() => rmSync(work, { recursive: true, force: true }));

describe.each(packages)('$name', (pkg) => {
  test('publint --strict finds nothing', async () => {
    const tarball = readFileSync(pkg.tarball);
    const { messages, pkg: manifest } = await publint({
      pack: {
        tarball: tarball.buffer.slice(tarball.byteOffset, tarball.byteOffset + tarball.byteLength),
      },
      strict: true,
    });
    expect(messages.map((m) => formatMessage(m, manifest))).toEqual([]);
  });

  test('attw finds no problem', async () => {
    const analysis = await checkPackage(createPackageFromTarballData(readFileSync(pkg.tarball)), {
      // A SQL file for migration tools, not a module.
      excludeEntrypoints: [/\.sql$/],
    });
    if (!analysis.types) expect.fail(`attw: ${pkg.name} ships no types`);
    // ESM-only packages: like attw's `--profile esm-only`, require() is not a way in.
    const ignored = ESM_ONLY.has(pkg.name) ? ['node10', 'node16-cjs'] : [];
    const problems = analysis.problems.filter(
      (problem) => !('resolutionKind' in problem && ignored.includes(problem.resolutionKind)),
    );
    expect(problems).toEqual([]);
  });

  test('ships LICENSE, README and repository metadata', () => {
    const listing = execFileSync('tar', ['tzf', pkg.tarball], { encoding: 'utf8' }).split('\n');
    expect(listing).toEqual(expect.arrayContaining(['package/LICENSE', 'package/README.md']));
    const manifest = JSON.parse(
      execFileSync('tar', ['xzOf', pkg.tarball, 'package/package.json'], { encoding: 'utf8' }),
    );
    expect(manifest).toMatchObject({
      license: 'MIT',
      repository: {
        url: 'git+https://github.com/idem-dev/idem.git',
        directory: `packages/${pkg.dir}`,
      },
      homepage: expect.stringMatching(/^https:\/\/github\.com\/idem-dev\/idem\//),
      bugs: { url: 'https://github.com/idem-dev/idem/issues' },
    });
  });

  test('the build keeps node: specifiers', () => {
    const bare =
      /(?:from\s*|require\(|import\()\s*["'](crypto|http|https|net|stream|buffer|util|zlib|events|timers\/promises|assert\/strict|fs|path|os)["']/;
    const files = execFileSync('tar', ['tzf', pkg.tarball], { encoding: 'utf8' })
      .split('\n')
      .filter((f) => /\.(c|m)?js$/.test(f));
    for (const file of files) {
      const text = execFileSync('tar', ['xzOf', pkg.tarball, file], {
        encoding: 'utf8',
        maxBuffer: 64 << 20,
      });
      expect(bare.exec(text)?.[0], `${pkg.name} ${file}`).toBeUndefined();
    }
  });
});
