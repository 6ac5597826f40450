/**
 * Writes the README examples into the scratch app as ESM (`.mts`) and CJS (`.cts`) and
 * compiles them with tsc under `node16` resolution, then type-checks the CJS form again
 * under `node10` resolution, where `exports` is ignored. The examples compile as a new
 * user's app does: `tsc --init`'s `strict` and `skipLibCheck`, Node's globals, no DOM.
 */
import { execFile } from 'node:child_process';
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { asCommonJs, asModule, type ExampleSpec, hasCjs, readmeExample } from './examples.js';

const require = createRequire(import.meta.url);
const TSC = require.resolve('typescript/bin/tsc');
const FIXTURES = new URL('../fixtures/', import.meta.url);

const COMMON = {
  target: 'es2022',
  lib: ['es2023'],
  strict: true,
  esModuleInterop: true,
  skipLibCheck: true,
  types: ['node'],
  // What a Nest app's tsconfig has (`nest new`): the @idem/nestjs example uses decorators.
  experimentalDecorators: true,
  emitDecoratorMetadata: true,
};

async function tsc(appDir: string, project: string): Promise<void> {
  try {
    await promisify(execFile)(process.execPath, [TSC, '-p', project], {
      cwd: appDir,
      encoding: 'utf8',
    });
  } catch (error) {
    const { stdout, stderr } = error as { stdout?: string; stderr?: string };
    throw new Error(`tsc -p ${project} failed in ${appDir}:\n${stdout ?? ''}${stderr ?? ''}`);
  }
}

/** Writes and compiles every example; the runnable files land in `out/esm` and `out/cjs`. */
export async function compileExamples(
  appDir: string,
  packagesDir: string,
  specs: ExampleSpec[],
  set: string,
): Promise<void> {
  for (const folder of ['esm', 'cjs', 'node10'])
    mkdirSync(join(appDir, folder), { recursive: true });
  copyFileSync(new URL('globals.d.ts', FIXTURES), join(appDir, 'globals.d.ts'));
  for (const spec of specs) {
    const example = readmeExample(packagesDir, spec.dir);
    writeFileSync(join(appDir, 'esm', `${spec.dir}.mts`), asModule(example, spec));
    if (!hasCjs(spec, set)) continue;
    writeFileSync(join(appDir, 'cjs', `${spec.dir}.cts`), asCommonJs(example, spec));
    if (spec.node10)
      writeFileSync(join(appDir, 'node10', `${spec.dir}.ts`), asCommonJs(example, spec));
  }
  writeFileSync(
    join(appDir, 'tsconfig.node16.json'),
    JSON.stringify({
      compilerOptions: {
        ...COMMON,
        module: 'node16',
        moduleResolution: 'node16',
        outDir: 'out',
        rootDir: '.',
      },
      include: ['esm/*.mts', 'cjs/*.cts', 'globals.d.ts'],
    }),
  );
  writeFileSync(
    join(appDir, 'tsconfig.node10.json'),
    JSON.stringify({
      compilerOptions: { ...COMMON, module: 'commonjs', moduleResolution: 'node10', noEmit: true },
      include: ['node10/*.ts', 'globals.d.ts'],
    }),
  );
  await Promise.all([tsc(appDir, 'tsconfig.node16.json'), tsc(appDir, 'tsconfig.node10.json')]);
}
