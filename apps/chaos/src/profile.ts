/** The sizes of one run. Durations in ms. Every phase is bounded by a count and a time. */
export interface Profile {
  name: 'short' | 'full';
  /** `IDEM_LEASE_MS` of the app instances. */
  leaseMs: number;
  /** Logical requests per row (each sent by 2 concurrent clients). */
  requests: number;
  /** Logical requests of the faulty-proxy row. */
  flakyRequests: number;
  /** Answers of 1 MiB in the memory row. */
  memoryAnswers: number;
  /** New logical requests per second at most (the traffic window grows to fit the count). */
  maxRatePerSec: number;
  /** Traffic runs this long before the first fault. */
  faultAtMs: number;
  /** Traffic keeps starting new requests this long after the fault ends. */
  tailMs: number;
  /** Clients stop retrying this long after the fault ended and the traffic stopped. */
  settleMs: number;
  /** Kill/restart cycles in the short-outage rows. */
  kills: number;
  /** Store outage of the short-outage rows: shorter than the lease. */
  shortOutageMs: number;
  /**
   * The longest store outage (from the fault to the store's first answer) that a row's
   * zero-twice promise covers: what is left of the lease at worst when it starts (the lease
   * less the app's heartbeat, a tenth of it) less the failing final write's retry interval (a
   * tenth of the lease) and a reconnection (200 ms). A longer one is the documented window
   * (core README, "What remains"): a row whose fault outlasted it judged nothing.
   */
  outageWindowMs: number;
  /** The long outage: several leases. */
  longOutageMs: number;
  /** Silent connection: longer than the request bound. */
  blackholeMs: number;
  /** Random drops, delays and short blackholes. */
  flakyMs: number;
  /** No request may take longer (model time + two leases + store timeouts, with margin). */
  boundMs: number;
  /** Client-side limit of one attempt (beyond the bound: the excess is measured). */
  attemptTimeoutMs: number;
  /** Service must be back this long after the store returns. */
  recoveryLimitMs: number;
  /** Recovery probes give up after this long. */
  probeMaxMs: number;
  /** The app's RSS bound on the memory store (CHAOS_RSS_LIMIT_MIB overrides). */
  rssLimitMiB: number;
  /** Upstream model: pieces per answer and the pause between them. */
  modelChunks: number;
  modelChunkDelayMs: number;
  /** Hard limit of the whole run; rows not started by then are reported as not run. */
  runLimitMs: number;
}

const LEASE_MS = 3_000;

const common = {
  leaseMs: LEASE_MS,
  shortOutageMs: 1_500,
  outageWindowMs: LEASE_MS - LEASE_MS / 10 - LEASE_MS / 10 - 200,
  boundMs: 10_000,
  attemptTimeoutMs: 15_000,
  recoveryLimitMs: 2_000,
  // The app's documented bound on the memory store with its defaults: 128 MiB for the process
  // itself + IDEM_MEMORY_MAX_BYTES (128 MiB) + 256 MiB of collector slack (apps/llm-api README).
  rssLimitMiB: 512,
  modelChunks: 4,
  modelChunkDelayMs: 50,
};

/** CI: a few minutes. The long outage still spans four leases; the blackhole passes the bound. */
export const shortProfile: Profile = {
  ...common,
  name: 'short',
  requests: 60,
  maxRatePerSec: 20,
  flakyRequests: 100,
  memoryAnswers: 300,
  faultAtMs: 1_500,
  tailMs: 2_500,
  settleMs: 12_000,
  kills: 2,
  longOutageMs: 20_000,
  blackholeMs: 12_000,
  flakyMs: 8_000,
  probeMaxMs: 12_000,
  runLimitMs: 360_000,
};

/** The sizes: 800 requests a row, 1,500 through the faulty proxy, 20+ s outages. */
export const fullProfile: Profile = {
  ...common,
  name: 'full',
  requests: 800,
  maxRatePerSec: 20,
  flakyRequests: 1_500,
  memoryAnswers: 1_500,
  faultAtMs: 3_000,
  tailMs: 5_000,
  settleMs: 30_000,
  kills: 4,
  longOutageMs: 30_000,
  blackholeMs: 40_000,
  flakyMs: 30_000,
  probeMaxMs: 30_000,
  runLimitMs: 900_000,
};

/** The profile `CHAOS_PROFILE` names (default short), with `CHAOS_RSS_LIMIT_MIB` applied. */
export function profileFromEnv(env: Readonly<Record<string, string | undefined>>): Profile {
  const name = env.CHAOS_PROFILE?.trim() || 'short';
  if (name !== 'short' && name !== 'full') {
    throw new Error(`CHAOS_PROFILE=${JSON.stringify(name)}: expected short or full`);
  }
  const profile = name === 'full' ? fullProfile : shortProfile;
  const rss = env.CHAOS_RSS_LIMIT_MIB?.trim();
  if (rss) {
    if (!/^\d+$/.test(rss) || Number(rss) < 16) {
      throw new Error(`CHAOS_RSS_LIMIT_MIB=${JSON.stringify(rss)}: expected an integer >= 16`);
    }
    return { ...profile, rssLimitMiB: Number(rss) };
  }
  return profile;
}
