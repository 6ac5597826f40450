/**
 * The packages as a new user gets them: packed, installed with npm into a fresh app with the
 * peers' newest versions and with their floors, the README examples type-checked (node16
 * and node10 resolution) and run as ESM and as CJS against real services.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { compileExamples } from '../src/compile.js';
import { EXAMPLES, type ExampleSpec, hasCjs } from '../src/examples.js';
import { PEER_FLOORS, PEER_SETS, type PeerSet, pinLatest } from '../src/peer-sets.js';
import { runExample } from '../src/run-example.js';
import {
  installedVersion,
  installScratchApp,
  nodeBinaries,
  type PublishedPackage,
  packAll,
} from '../src/scratch-app.js';
import { runConformanceInScratch } from '../src/scratch-conformance.js';
import { DATABASE_URL, REDIS_URL, startChargesApi, startDynamoDb } from '../src/services.js';

const PACKAGES_DIR = fileURLToPath(new URL('../../', import.meta.url));
const work = mkdtempSync(join(tmpdir(), 'idem-pack-check-'));
let packages: PublishedPackage[] = [];
const env: Record<NonNullable<ExampleSpec['service']>, NodeJS.ProcessEnv> = {
  redis: { REDIS_URL },
  postgres: { DATABASE_URL },
  dynamodb: {},
  'idempotent-api': {},
  // The consumers example connects to amqp://guest:guest@127.0.0.1:5672 as written.
  rabbitmq: {},
};
const stops: (() => Promise<void>)[] = [];

beforeAll(async () => {
  packages = packAll(PACKAGES_DIR, join(work, 'tarballs'));
  const api = await startChargesApi();
  stops.push(api.close);
  env['idempotent-api'] = { PACK_CHECK_API_ORIGIN: api.origin };
  const dynamodb = await startDynamoDb();
  stops.push(dynamodb.stop);
  env.dynamodb = { ...dynamodb.env, IDEMPOTENCY_TABLE: 'pack-check-lambda' };
});

afterAll(async () => {
  await Promise.all(stops.map((stop) => stop()));
  // PACK_CHECK_KEEP=1 keeps the scratch apps to look into.
  if (!process.env.PACK_CHECK_KEEP) rmSync(work, { recursive: true, force: true });
});

// (Every peer's floor is checked against its range in test/peer-sets.test.ts.)
test('every published package has a README example here', () => {
  const checked = new Set([...EXAMPLES.map((e) => e.dir), 'store-conformance', 'http-conformance']);
  expect(packages.map((p) => p.dir).filter((dir) => !checked.has(dir))).toEqual([]);
});

/**
 * Per peer set: npm install, then tsc, then the conformance suites, started for both sets at
 * once (npm waits on the network and the disk, tsc on the CPU); the tests below await them.
 */
const steps = new Map<
  string,
  { installed: Promise<void>; compiled: Promise<void>; conformance: Promise<void> }
>();

function prepare(set: PeerSet): void {
  const appDir = join(work, set.name);
  const installed = pinLatest(set).then((pinned) => installScratchApp(appDir, packages, pinned));
  const compiled = installed.then(() => compileExamples(appDir, PACKAGES_DIR, EXAMPLES, set.name));
  const conformance = installed.then(async () => {
    for (const node of nodeBinaries(appDir, set)) {
      await runConformanceInScratch(node, appDir, PACKAGES_DIR);
    }
  });
  // Each is awaited by a test; this only keeps a failure from being reported twice.
  for (const step of [installed, compiled, conformance]) step.catch(() => {});
  steps.set(set.name, { installed, compiled, conformance });
}

describe.each(PEER_SETS)('peers at $name (Node $nodeMajor, or this one and Node 24)', (set) => {
  const appDir = join(work, set.name);
  const step = (name: 'installed' | 'compiled' | 'conformance') => {
    if (!steps.has(set.name)) for (const each of PEER_SETS) prepare(each);
    return steps.get(set.name)![name];
  };

  test('npm install of every tarball and the peers resolves (no ERESOLVE)', async () => {
    await step('installed');
    if (set.name === 'floor') {
      for (const [name, version] of Object.entries(PEER_FLOORS)) {
        expect({ name, version: installedVersion(appDir, name) }).toEqual({ name, version });
      }
    }
  });

  test('the README examples type-check (node16 and node10 resolution)', async () => {
    await step('compiled');
  });

  test.each(EXAMPLES)('README example of $dir runs as ESM and as CJS', async (spec) => {
    await step('compiled');
    const serviceEnv = spec.service ? env[spec.service] : {};
    for (const node of nodeBinaries(appDir, set)) {
      await runExample(node, appDir, `out/esm/${spec.dir}.mjs`, spec, serviceEnv);
      if (hasCjs(spec, set.name)) {
        await runExample(node, appDir, `out/cjs/${spec.dir}.cjs`, spec, serviceEnv);
      }
    }
  });

  test('the conformance suites load (ESM) and pass in the installed vitest', async () => {
    await step('conformance');
  });
});
