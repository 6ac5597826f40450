import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { arch } from 'node:os';
import { fileURLToPath } from 'node:url';

/** A Node binary the app instances run on, and its version (`v24.22.3`). */
export interface AppNode {
  path: string;
  version: string;
}

const versions = new Map<string, string>();

/** `<path> --version` (`v24.22.3`), asked once per binary. */
export function nodeVersionOf(path: string): string {
  let version = versions.get(path);
  if (version === undefined) {
    version = execFileSync(path, ['--version'], { encoding: 'utf8', timeout: 10_000 }).trim();
    versions.set(path, version);
  }
  return version;
}

/** Node `major` from apps/node-binaries (npm's `node-linux-<arch>@<major>`), when installed. */
function workspaceNode(major: '20' | '24'): string | undefined {
  const platform = arch() === 'arm64' ? 'linux-arm64' : 'linux-x64';
  const path = fileURLToPath(
    new URL(`../../node-binaries/node_modules/node${major}-${platform}/bin/node`, import.meta.url),
  );
  return existsSync(path) ? path : undefined;
}

/**
 * The Node binaries the app instances run on. Each row runs its instances on these in turn
 * (instance i of row r on `nodes[(r + i) % n]`), so one run of the suite breaks the app on
 * every Node listed, with two versions serving the same keys side by side in every row of
 * two instances, as during a rolling upgrade.
 *
 * `CHAOS_NODES` (comma-separated paths) picks them; by default, the suite's own Node and
 * Node 24 from apps/node-binaries (Node 20 when the suite itself runs on 24). In CI a
 * missing second Node fails the run instead of leaving it out. Which Node each instance
 * really ran on is read from the process (`AppInstance.nodeVersion`) and checked by the test.
 */
export function appNodes(env: Readonly<Record<string, string | undefined>>): AppNode[] {
  const listed = env.CHAOS_NODES?.split(',')
    .map((p) => p.trim())
    .filter(Boolean);
  const paths = listed?.length ? listed : [process.execPath];
  if (!listed?.length) {
    const other = process.version.startsWith('v24.') ? '20' : '24';
    const second = workspaceNode(other);
    if (second) paths.push(second);
    else if (env.CI) {
      throw new Error(
        `chaos: no Node ${other} for the second app instance (apps/node-binaries): run pnpm install, or set CHAOS_NODES`,
      );
    }
  }
  return paths.map((path) => ({ path, version: nodeVersionOf(path) }));
}
