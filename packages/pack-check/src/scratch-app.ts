/**
 * Packs every published package with `pnpm pack` (workspace ranges become real versions, as
 * on the registry) and installs the tarballs with plain npm into a fresh app, as a new user
 * would: no workspace, no hoisting of our own, npm's own peer resolution (ERESOLVE fails).
 */
import { execFile, execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import type { PeerSet } from './peer-sets.js';

export interface PublishedPackage {
  /** Folder under packages/. */
  dir: string;
  name: string;
  tarball: string;
  peerDependencies: Record<string, string>;
}

interface Manifest {
  name: string;
  private?: boolean;
  peerDependencies?: Record<string, string>;
}

/** Every package under packages/ that is not private. */
export function publishedPackages(packagesDir: string): Omit<PublishedPackage, 'tarball'>[] {
  return readdirSync(packagesDir, { withFileTypes: true })
    .filter((entry) => entry.isDirectory())
    .flatMap((entry) => {
      let manifest: Manifest;
      try {
        manifest = JSON.parse(readFileSync(join(packagesDir, entry.name, 'package.json'), 'utf8'));
      } catch {
        return [];
      }
      if (manifest.private) return [];
      return [
        { dir: entry.name, name: manifest.name, peerDependencies: manifest.peerDependencies ?? {} },
      ];
    });
}

/** `pnpm pack` of each package into `outDir`; the build must have run. */
export function packAll(packagesDir: string, outDir: string): PublishedPackage[] {
  mkdirSync(outDir, { recursive: true });
  return publishedPackages(packagesDir).map((pkg) => {
    const output = execFileSync('pnpm', ['pack', '--pack-destination', outDir], {
      cwd: join(packagesDir, pkg.dir),
      encoding: 'utf8',
    });
    const tarball = output
      .split('\n')
      .map((line) => line.trim())
      .find((line) => line.endsWith('.tgz'));
    if (!tarball) throw new Error(`pnpm pack printed no tarball for ${pkg.name}:\n${output}`);
    return { ...pkg, tarball };
  });
}

/**
 * Writes a scratch app that depends on every tarball and on the peer set, and runs
 * `npm install` there. npm's cache (default ~/.npm) makes a second run mostly offline.
 */
export async function installScratchApp(
  appDir: string,
  packages: PublishedPackage[],
  set: PeerSet,
): Promise<void> {
  mkdirSync(appDir, { recursive: true });
  const dependencies: Record<string, string> = { ...set.dependencies };
  if (set.nodeMajor) dependencies.node = `^${set.nodeMajor}`;
  for (const pkg of packages) dependencies[pkg.name] = `file:${pkg.tarball}`;
  writeFileSync(
    join(appDir, 'package.json'),
    `${JSON.stringify({ name: `pack-check-${set.name}`, private: true, dependencies }, null, 2)}\n`,
  );
  try {
    await promisify(execFile)(
      'npm',
      ['install', '--no-audit', '--no-fund', '--prefer-offline', '--loglevel=error'],
      { cwd: appDir, encoding: 'utf8', timeout: 300_000, maxBuffer: 16 << 20 },
    );
  } catch (error) {
    const { stdout, stderr } = error as { stdout?: string; stderr?: string };
    throw new Error(`npm install (${set.name} peers) failed:\n${stdout ?? ''}\n${stderr ?? ''}`);
  }
}

/** The version npm installed for a dependency of the scratch app. */
export function installedVersion(appDir: string, name: string): string {
  const manifest = JSON.parse(
    readFileSync(join(appDir, 'node_modules', name, 'package.json'), 'utf8'),
  ) as { version: string };
  return manifest.version;
}

/** The node binary a peer set runs on: the scratch app's `node` package, or this process's. */
function nodeBinary(appDir: string, set: PeerSet): string {
  return set.nodeMajor ? join(appDir, 'node_modules', '.bin', 'node') : process.execPath;
}

/**
 * Every node binary a peer set's examples and conformance suites run on: {@link nodeBinary},
 * and for a set that runs on this process's Node when that is not Node 24, Node 24 as well
 * (apps/node-binaries, from npm with the workspace). One run of pack-check then runs each
 * set on Node 24 and the floor set on this Node too, so the Node 24 lanes of
 * scripts/test.sh leave pack-check to the Node 20 lane instead of installing and
 * type-checking both apps again. Throws when Node 24 is not installed.
 */
export function nodeBinaries(appDir: string, set: PeerSet): string[] {
  const own = nodeBinary(appDir, set);
  if (set.nodeMajor || process.version.startsWith('v24.')) return [own];
  const platform = process.arch === 'arm64' ? 'linux-arm64' : 'linux-x64';
  const node24 = fileURLToPath(
    new URL(
      `../../../apps/node-binaries/node_modules/node24-${platform}/bin/node`,
      import.meta.url,
    ),
  );
  if (!existsSync(node24)) {
    throw new Error(`no Node 24 at ${node24}: run pnpm install (apps/node-binaries carries it)`);
  }
  return [own, node24];
}
