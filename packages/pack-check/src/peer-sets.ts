/**
 * The two installs a new user can end up with: every peer at its newest version (what a
 * plain `npm install <peer>` picks today) and every peer at the lowest version our
 * `peerDependencies` accept. Each floor here MUST equal the lower bound of the range in the
 * package that declares it (checked in test/peer-sets.test.ts), so the ranges cannot claim
 * more than this test runs.
 */
export interface PeerSet {
  name: 'latest' | 'floor';
  /**
   * Runs the examples and the suites on Node from the `node` package of this major, installed
   * in the scratch app (the newest peers may need a newer Node than CI's: vitest 5 wants 22+);
   * undefined: on the Node running the test.
   */
  nodeMajor?: string;
  /** npm specs for the scratch app's `dependencies`: peers, and what the README examples import. */
  dependencies: Record<string, string>;
}

/** Lowest accepted version of each peer, by package. */
export const PEER_FLOORS: Record<string, string> = {
  express: '5.0.0',
  fastify: '5.0.0',
  hono: '4.5.0',
  ioredis: '5.9.0',
  pg: '8.11.0',
  '@aws-sdk/client-dynamodb': '3.723.0',
  vitest: '3.2.0',
  'fast-check': '4.0.0',
  // @idem/nestjs (Nest 12.0.0 is not in a set: the floor is the lowest version, 11.0.0).
  '@nestjs/common': '11.0.0',
  '@nestjs/core': '11.0.0',
  'reflect-metadata': '0.1.12',
  rxjs: '7.1.0',
  koa: '3.0.0',
  '@opentelemetry/api': '1.9.0',
  // @idem/lambda (optional: its Middy middleware; Middy 7's newest in the latest set).
  '@middy/core': '6.3.0',
};

/** Packages the README examples import that are no peer of ours, with the types they need. */
const EXAMPLE_EXTRAS_LATEST: Record<string, string> = {
  '@hono/node-server': 'latest',
  '@types/express': 'latest',
  '@types/pg': 'latest',
  '@types/node': 'latest',
  '@nestjs/platform-express': 'latest',
  '@koa/router': 'latest',
  '@koa/bodyparser': 'latest',
  '@types/koa': 'latest',
  '@types/aws-lambda': 'latest',
  amqplib: 'latest',
  '@types/amqplib': 'latest',
};
const EXAMPLE_EXTRAS_FLOOR: Record<string, string> = {
  // The last line whose own peer range still takes hono 4.5.
  '@hono/node-server': '1.19.19',
  '@types/express': '5.0.0',
  '@types/pg': '8.10.2',
  '@types/node': '20.19.0',
  '@nestjs/platform-express': '11.0.0',
  // The lowest versions the packages' own tests use (their devDependencies' floors).
  '@koa/router': '15.7.0',
  '@koa/bodyparser': '6.1.0',
  '@types/koa': '3.0.3',
  '@types/aws-lambda': '8.10.164',
  amqplib: '2.3.1',
  '@types/amqplib': '0.10.8',
};

const ALL_PEER_SETS: PeerSet[] = [
  {
    name: 'latest',
    nodeMajor: '24',
    dependencies: {
      ...Object.fromEntries(Object.keys(PEER_FLOORS).map((name) => [name, 'latest'])),
      ...EXAMPLE_EXTRAS_LATEST,
    },
  },
  {
    name: 'floor',
    dependencies: { ...PEER_FLOORS, ...EXAMPLE_EXTRAS_FLOOR },
  },
];

/**
 * The latest set with each `latest` pinned to the version the registry's `latest` tag names
 * today: given the tag itself, npm may settle on an older version that fits our peer ranges,
 * which would hide a range that refuses the newest major.
 */
export async function pinLatest(set: PeerSet): Promise<PeerSet> {
  const { execFile } = await import('node:child_process');
  const { promisify } = await import('node:util');
  const entries = await Promise.all(
    Object.entries(set.dependencies).map(async ([name, spec]) => {
      if (spec !== 'latest') return [name, spec] as const;
      const { stdout } = await promisify(execFile)('npm', ['view', `${name}@latest`, 'version'], {
        encoding: 'utf8',
        timeout: 60_000,
      });
      return [name, stdout.trim()] as const;
    }),
  );
  return { ...set, dependencies: Object.fromEntries(entries) };
}

/**
 * The sets this run installs: `PACK_CHECK_PEER_SETS` (comma-separated names, default both).
 * The latest set always runs on Node 24, and the floor set on this Node and Node 24
 * (`nodeBinaries`), so one run covers both Nodes.
 */
export function selectPeerSets(env: string | undefined): PeerSet[] {
  if (env === undefined || env.trim() === '') return ALL_PEER_SETS;
  const names = env.split(',').map((name) => name.trim());
  const unknown = names.filter((name) => !ALL_PEER_SETS.some((set) => set.name === name));
  if (unknown.length > 0 || names.length === 0) {
    throw new Error(
      `PACK_CHECK_PEER_SETS must list some of ${ALL_PEER_SETS.map((set) => set.name).join(', ')}; got ${JSON.stringify(env)}`,
    );
  }
  return ALL_PEER_SETS.filter((set) => names.includes(set.name));
}

export const PEER_SETS: PeerSet[] = selectPeerSets(process.env.PACK_CHECK_PEER_SETS);
