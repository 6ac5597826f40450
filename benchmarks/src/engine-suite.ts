import { type Bounds, rotate, throughput } from './measure.js';
import type { Profile } from './profile.js';
import { type Column, figure, pairedRatios, type Row, row, type SuiteResult } from './result.js';

/**
 * One library (or the raw client) on one backend, driven through its public API. Each keeps
 * its records under a namespace of its own, so the keys passed in may be the same strings.
 */
export interface Contender {
  /** Its column header. */
  name: string;
  role: 'raw' | 'idem' | 'peer';
  /**
   * Called before each round's measurements at one concurrency: completes `keys` (the replay
   * pool), and starts from fresh state where the backend allows it (an in-process store).
   */
  prepare(keys: readonly string[]): Promise<void>;
  /** A first execution on a key never used: MUST run the operation and record its result. */
  cycle(key: string): Promise<void>;
  /** The same call on a completed key: MUST return the recorded result without running it. */
  replay(key: string): Promise<void>;
}

export interface EngineSuite {
  id: string;
  title: string;
  notes: string[];
  concurrencies: number[];
  /** The raw ceiling first, then idem, then the peers (the column order). */
  contenders: Contender[];
  bounds: Bounds;
  /** Completed keys per contender that replays read round-robin. */
  replayPool: number;
  /** Removes what a round wrote (untimed). */
  afterRound?(): Promise<void>;
}

const OPERATIONS = ['cycle', 'replay'] as const;

/**
 * Measures every contender at every concurrency, cycles then replays, in rounds that rotate
 * the contenders' order, so that drift on a shared machine hits all of them alike; each figure
 * is the median of its rounds.
 */
export async function runEngineSuite(
  suite: EngineSuite,
  profile: Profile,
  log: (line: string) => void,
): Promise<SuiteResult> {
  const poolKeys = (tag: string) =>
    Array.from({ length: suite.replayPool }, (_, j) => `${tag}-done-${j}`);
  const measure = (
    contender: Contender,
    op: 'cycle' | 'replay',
    c: number,
    tag: string,
    keys: readonly string[],
    bounds: Bounds,
  ) =>
    throughput(
      c,
      op === 'cycle'
        ? (i) => contender.cycle(`${tag}-new-${i}`)
        : (i) => contender.replay(keys[i % keys.length]!),
      bounds,
    );

  // Warm-up: connections, JIT, the backend's caches; nothing of it is kept.
  const top = Math.max(...suite.concurrencies);
  for (const contender of suite.contenders) {
    const keys = poolKeys('warm');
    await contender.prepare(keys);
    for (const op of OPERATIONS) await measure(contender, op, top, 'warm', keys, profile.warmup);
  }
  await suite.afterRound?.();

  const figures = new Map<string, number[]>();
  const at = (c: number, op: string, name: string) => `${c}|${op}|${name}`;
  for (let round = 0; round < profile.rounds; round++) {
    for (const c of suite.concurrencies) {
      const tag = `r${round}c${c}`;
      const pools = new Map<Contender, string[]>();
      for (const contender of suite.contenders) {
        const keys = poolKeys(tag);
        await contender.prepare(keys);
        pools.set(contender, keys);
      }
      for (const op of OPERATIONS) {
        for (const contender of rotate(suite.contenders, round)) {
          const rate = await measure(contender, op, c, tag, pools.get(contender)!, suite.bounds);
          const key = at(c, op, contender.name);
          figures.set(key, [...(figures.get(key) ?? []), rate]);
        }
      }
    }
    await suite.afterRound?.();
    log(`${suite.id}: round ${round + 1}/${profile.rounds} done`);
  }

  const raw = suite.contenders.find((c) => c.role === 'raw');
  const idem = suite.contenders.find((c) => c.role === 'idem');
  const peers = suite.contenders.filter((c) => c.role === 'peer');
  if (!raw || !idem) throw new Error(`${suite.id}: a suite needs a raw ceiling and idem`);
  const columns: Column[] = [
    ...suite.contenders.map((c) => ({ header: c.name, kind: 'rate' as const })),
    { header: 'idem ÷ best peer', kind: 'ratio' },
    { header: 'idem ÷ raw', kind: 'ratio' },
  ];
  const rows: Row[] = [];
  for (const c of suite.concurrencies) {
    for (const op of OPERATIONS) {
      const rounds = (contender: Contender) => figures.get(at(c, op, contender.name))!;
      // The best peer of each round, so that the ratio pairs measurements of one round.
      const bestPeer =
        peers.length > 0
          ? rounds(idem).map((_, r) => Math.max(...peers.map((p) => rounds(p)[r]!)))
          : undefined;
      rows.push(
        row(
          [String(c), op],
          [
            ...suite.contenders.map((contender) => figure(rounds(contender))),
            figure(pairedRatios(rounds(idem), bestPeer)),
            figure(pairedRatios(rounds(idem), rounds(raw))),
          ],
        ),
      );
    }
  }
  return {
    id: suite.id,
    title: suite.title,
    notes: suite.notes,
    labelHeaders: ['concurrency', 'operation'],
    columns,
    rows,
  };
}
