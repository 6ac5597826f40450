import pg from 'pg';
import { DATABASE_URL } from './pg-env.js';

/**
 * Measures, while a timing test runs, whether the machine kept up with the timings the test
 * judges: how late this process's event loop ran a 10 ms timer, and how long a `SELECT 1` on
 * a connection of its own took at the server (both starve on a loaded CI machine: five test
 * lanes on two cores). A lease promise of the product ("a healthy owner is not aborted", "a
 * renewal is answered within its limit") holds only while the process and the server answer
 * within the lease's margin: the core's lease keeper lands every renewal before its estimate
 * when a round trip stays under `leaseMs - heartbeatMs` (src/lease-keeper.ts in @idem/core).
 * Tests judge such a promise strictly when the probe saw the machine keep up over the window
 * that matters, and otherwise assert only what holds however slow the machine (fencing: one
 * business row, no overlapping runs, every call settles).
 */
export type LoadProbe = {
  /** The longest event-loop hold-up (ms past the 10 ms timer) seen within [from, to]. */
  maxLag(from: number, to: number): number;
  /** The longest `SELECT 1` round trip (ms) sent or still running within [from, to]. */
  maxRoundTrip(from: number, to: number): number;
  /** Both added: how much later than an idle machine's a round trip could land then. */
  slowness(from: number, to: number): number;
  stop(): Promise<void>;
};

const TICK_MS = 10;
const PING_EVERY_MS = 50;

export function startLoadProbe(): LoadProbe {
  const lags: { at: number; ms: number }[] = [];
  const trips: { from: number; to: number }[] = [];
  let last = performance.now();
  const timer = setInterval(() => {
    const now = performance.now();
    const lag = now - last - TICK_MS;
    if (lag > 1) lags.push({ at: now, ms: lag });
    last = now;
  }, TICK_MS);
  let going = true;
  let pending: number | undefined;
  const client = new pg.Client({ connectionString: DATABASE_URL });
  client.on('error', () => {});
  const pinging = (async () => {
    try {
      await client.connect();
      while (going) {
        const sent = performance.now();
        pending = sent;
        await client.query('SELECT 1');
        pending = undefined;
        trips.push({ from: sent, to: performance.now() });
        await new Promise((r) => setTimeout(r, PING_EVERY_MS));
      }
    } catch {
      // The probe measures; a failure of its own ends it quietly.
    } finally {
      await client.end().catch(() => {});
    }
  })();
  const maxLag = (from: number, to: number) => {
    let most = 0;
    // A hold-up is seen when it ends: one ending up to its own length after `from` covered it.
    for (const l of lags) if (l.at >= from && l.at - l.ms <= to) most = Math.max(most, l.ms);
    // A hold-up still going on (the loop runs this now, so at most since the last tick).
    return most;
  };
  const maxRoundTrip = (from: number, to: number) => {
    let most = 0;
    for (const t of trips) if (t.to >= from && t.from <= to) most = Math.max(most, t.to - t.from);
    if (pending !== undefined && pending <= to) most = Math.max(most, performance.now() - pending);
    return most;
  };
  return {
    maxLag,
    maxRoundTrip,
    slowness: (from, to) => maxLag(from, to) + maxRoundTrip(from, to),
    async stop() {
      going = false;
      clearInterval(timer);
      await pinging;
    },
  };
}
