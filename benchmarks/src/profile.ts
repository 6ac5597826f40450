import type { Bounds } from './measure.js';

/** Sizes of one run. Every loop of the benchmark is bounded by these, in count and in time. */
export interface Profile {
  name: 'smoke' | 'default';
  /** Alternating rounds per figure; the figure is their median. */
  rounds: number;
  /** Redis and memory suites: one measurement (one contender, one operation, one concurrency). */
  engine: Bounds;
  /** DynamoDB Local suite: one measurement. */
  dynamodb: Bounds;
  /** Untimed warm-up of each contender before the rounds. */
  warmup: Bounds;
  /** Completed keys per contender that replays read round-robin (Redis, memory; DynamoDB). */
  replayPool: number;
  dynamodbReplayPool: number;
  /** HTTP suite: seconds of one autocannon measurement. */
  httpSeconds: number;
  /** HTTP suite: seconds of the untimed warm-up of each server and request kind; 0 for none. */
  httpWarmupSeconds: number;
  /** HTTP suite: autocannon connections. */
  httpConnections: number;
  /** HTTP suite: completed keys the replay measurement cycles through. */
  httpReplayKeys: number;
  /** Concurrency levels of the in-process suites. */
  concurrency: { redis: number[]; memory: number[]; dynamodb: number[] };
}

const MAX_ROUNDS = 15;

const profiles: Record<Profile['name'], Omit<Profile, 'name' | 'rounds'> & { rounds: number }> = {
  // Proves every suite runs end to end: figures from it are noise.
  smoke: {
    rounds: 1,
    engine: { ms: 120, maxOps: 20_000 },
    dynamodb: { ms: 150, maxOps: 300 },
    warmup: { ms: 100, maxOps: 100 },
    replayPool: 8,
    dynamodbReplayPool: 8,
    httpSeconds: 0.5,
    httpWarmupSeconds: 0,
    httpConnections: 16,
    httpReplayKeys: 16,
    concurrency: { redis: [1, 64], memory: [1, 64], dynamodb: [1, 16] },
  },
  default: {
    rounds: 3,
    engine: { ms: 1_000, maxOps: 150_000 },
    dynamodb: { ms: 2_000, maxOps: 10_000 },
    warmup: { ms: 500, maxOps: 5_000 },
    replayPool: 256,
    dynamodbReplayPool: 64,
    httpSeconds: 2,
    // A server's first seconds under load run cold (measured: Express and Hono without
    // middleware served 3.0-4.9k requests/s in their first 2 s, 7-9.8k by their third 2 s):
    // 1 s measured them still warming up in round 1.
    httpWarmupSeconds: 4,
    httpConnections: 64,
    httpReplayKeys: 64,
    concurrency: { redis: [1, 64], memory: [1, 64], dynamodb: [1, 16] },
  },
};

/** The profile named by BENCH_PROFILE (`smoke` or `default`), rounds overridable by BENCH_ROUNDS. */
export function profileFromEnv(env: NodeJS.ProcessEnv = process.env): Profile {
  const name = env.BENCH_PROFILE || 'default';
  if (name !== 'smoke' && name !== 'default') {
    throw new Error(`BENCH_PROFILE must be smoke or default, not ${JSON.stringify(name)}`);
  }
  const base = profiles[name];
  let rounds = base.rounds;
  if (env.BENCH_ROUNDS) {
    rounds = Number(env.BENCH_ROUNDS);
    if (!Number.isInteger(rounds) || rounds < 1 || rounds > MAX_ROUNDS) {
      throw new Error(`BENCH_ROUNDS must be an integer from 1 to ${MAX_ROUNDS}`);
    }
  }
  return { ...base, name, rounds };
}
