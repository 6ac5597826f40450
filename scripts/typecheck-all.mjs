#!/usr/bin/env node
import { execFileSync } from 'node:child_process';
// Typechecks every workspace package whose `typecheck` script is `tsc --noEmit`, in ONE node
// process: each package still gets its own ts.Program built from its own tsconfig.json (its own
// root files and compiler options, resolving modules from its own directory), so each is checked
// exactly as `tsc --noEmit` in that package checks it. What is shared is the parsed and bound
// source files (lib.dom.d.ts, @types/node, vitest, framework typings, workspace dist .d.ts), keyed
// on the compiler options that affect parsing and binding, as the TypeScript language service's
// DocumentRegistry does. Per-package `pnpm --filter X typecheck` still runs plain `tsc --noEmit`.
// Like `turbo run typecheck` (which depends on ^build), it first runs `turbo run build` so the
// workspace dist .d.ts exist, unless given --only (as .ci/run does, after its own build).
// --force is accepted and ignored (nothing is cached).
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join, resolve } from 'node:path';

const root = resolve(import.meta.dirname, '..');
if (!process.argv.includes('--only')) {
  execFileSync('pnpm', ['exec', 'turbo', 'run', 'build'], { cwd: root, stdio: 'inherit' });
}
const ts = createRequire(join(root, 'package.json'))('typescript');

const dirs = [];
for (const pattern of ['packages', 'apps']) {
  for (const name of readdirSync(join(root, pattern)).sort()) dirs.push(join(pattern, name));
}
dirs.push('benchmarks');
const projects = dirs.filter((dir) => {
  const pkgFile = join(root, dir, 'package.json');
  if (!existsSync(pkgFile)) return false;
  const script = JSON.parse(readFileSync(pkgFile, 'utf8')).scripts?.typecheck;
  if (script === undefined) return false;
  if (script !== 'tsc --noEmit') {
    throw new Error(
      `${dir}: typecheck script is "${script}", not "tsc --noEmit"; teach scripts/typecheck-all.mjs about it`,
    );
  }
  return true;
});

const affecting = [...ts.sourceFileAffectingCompilerOptions.map((o) => o.name), 'strict'];
const cache = new Map();
const formatHost = {
  getCanonicalFileName: (f) => f,
  getCurrentDirectory: () => root,
  getNewLine: () => ts.sys.newLine,
};
let failed = 0;
for (const dir of projects) {
  const configPath = join(root, dir, 'tsconfig.json');
  const configErrors = [];
  const parsed = ts.getParsedCommandLineOfConfigFile(
    configPath,
    {},
    {
      ...ts.sys,
      onUnRecoverableConfigFileDiagnostic: (d) => configErrors.push(d),
    },
  );
  const options = parsed.options;
  const optionsKey = JSON.stringify(affecting.map((name) => options[name]));
  const host = ts.createCompilerHost(options);
  const getSourceFile = host.getSourceFile;
  host.getSourceFile = (fileName, langOrOptions, onError, shouldCreate) => {
    const o =
      typeof langOrOptions === 'object' ? langOrOptions : { languageVersion: langOrOptions };
    const key = `${optionsKey}|${o.languageVersion}|${o.impliedNodeFormat}|${o.jsDocParsingMode}|${fileName}`;
    let file = cache.get(key);
    if (file === undefined) {
      file = getSourceFile(fileName, langOrOptions, onError, shouldCreate);
      if (file !== undefined) cache.set(key, file);
    }
    return file;
  };
  const program = ts.createProgram({
    rootNames: parsed.fileNames,
    options,
    projectReferences: parsed.projectReferences,
    host,
    configFileParsingDiagnostics: ts.getConfigFileParsingDiagnostics(parsed),
  });
  const diagnostics = [...configErrors, ...ts.getPreEmitDiagnostics(program)];
  if (diagnostics.length > 0) {
    failed++;
    process.stdout.write(`\n${dir}: ${diagnostics.length} error(s)\n`);
    process.stdout.write(ts.formatDiagnosticsWithColorAndContext(diagnostics, formatHost));
  } else {
    process.stdout.write(`${dir}: ok (${parsed.fileNames.length} files)\n`);
  }
}
if (failed > 0) {
  process.stdout.write(`\ntypecheck failed in ${failed} of ${projects.length} packages\n`);
  process.exit(1);
}
process.stdout.write(`typecheck passed in ${projects.length} packages\n`);
