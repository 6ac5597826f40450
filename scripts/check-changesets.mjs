#!/usr/bin/env node
// Checks what `changeset version` would refuse, without git: every changeset names packages of
// this workspace, and none mixes packages the config ignores with packages it releases (the
// release would stop there). Run by `pnpm lint`.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const config = JSON.parse(readFileSync(join(root, '.changeset/config.json'), 'utf8'));
const ignored = new Set(config.ignore ?? []);
const names = new Set();
for (const dir of ['packages', 'apps', 'benchmarks']) {
  const paths =
    dir === 'benchmarks'
      ? [join(root, dir)]
      : readdirSync(join(root, dir)).map((d) => join(root, dir, d));
  for (const path of paths) {
    try {
      names.add(JSON.parse(readFileSync(join(path, 'package.json'), 'utf8')).name);
    } catch {
      // not a package
    }
  }
}
const problems = [];
for (const file of readdirSync(join(root, '.changeset')).filter(
  (f) => f.endsWith('.md') && f !== 'README.md',
)) {
  const text = readFileSync(join(root, '.changeset', file), 'utf8');
  const front = /^---\n([\s\S]*?)\n---\n/.exec(text);
  if (!front) {
    problems.push(`${file}: no front matter`);
    continue;
  }
  const packages = [];
  for (const line of front[1].split('\n').filter((l) => l.trim() !== '')) {
    const m = /^(["'])([^"']+)\1:\s*(major|minor|patch)\s*$/.exec(line);
    if (!m) problems.push(`${file}: cannot read "${line}"`);
    else packages.push(m[2]);
  }
  for (const name of packages)
    if (!names.has(name)) problems.push(`${file}: ${name} is no package of this workspace`);
  const some = packages.filter((p) => ignored.has(p));
  if (some.length > 0 && some.length < packages.length)
    problems.push(
      `${file}: mixes ignored (${some.join(', ')}) and released packages; changeset version refuses that`,
    );
}
if (problems.length > 0) {
  console.error(`check-changesets: ${problems.length} problem(s)\n${problems.join('\n')}`);
  process.exit(1);
}
console.log('check-changesets: ok');
