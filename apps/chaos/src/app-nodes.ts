import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { arch } from 'node:os';
import { fileURLToPath } from 'node:url';

/** A Node binary the app instances run on, and its version (`v24.22.3`). */
export interface AppNode {
  path: string;
  version: string;
}

/** Node 24 from apps/node-binaries (npm's `node-linux-<arch>@24`), when installed. */
function workspaceNode24(): string | undefined {
  const platform = arch() === 'arm64' ? 'linux-arm64' : 'linux-x64';
  const path = fileURLToPath(
    new URL(`../../node-binaries/node_modules/node24-${platform}/bin/node`, import.meta.url),
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
 * Node 24 from apps/node-binaries when the suite's Node is another major. In CI a missing
 * Node 24 fails the run instead of leaving it out.
 */
export function appNodes(env: Readonly<Record<string, string | undefined>>): AppNode[] {
  const listed = env.CHAOS_NODES?.split(',')
    .map((p) => p.trim())
    .filter(Boolean);
  const paths = listed?.length ? listed : [process.execPath];
  if (!listed?.length && !process.version.startsWith('v24.')) {
    const node24 = workspaceNode24();
    if (node24) paths.push(node24);
    else if (env.CI) {
      throw new Error(
        'chaos: no Node 24 for the second app instance (apps/node-binaries): run pnpm install, or set CHAOS_NODES',
      );
    }
  }
  return paths.map((path) => {
    const version = execFileSync(path, ['--version'], { encoding: 'utf8', timeout: 10_000 }).trim();
    return { path, version };
  });
}
