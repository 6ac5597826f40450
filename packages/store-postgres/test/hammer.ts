import { InProgressError } from '@idem/core';
import type pg from 'pg';
import { sleep } from './pg-env.js';

/**
 * Terminates, every `everyMs`, the backends whose `application_name` is `application`
 * (the renewal connection's, in the review hammers), counting them in `stats.kills`, until
 * the returned `stop` is called (it resolves once the loop ended).
 */
export function terminateEvery(
  admin: pg.Pool,
  application: string,
  everyMs: number,
  stats: { kills: number },
): () => Promise<void> {
  let going = true;
  const loop = (async () => {
    while (going) {
      await sleep(everyMs);
      const { rowCount } = await admin.query(
        'SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1',
        [application],
      );
      stats.kills += rowCount ?? 0;
    }
  })();
  return () => {
    going = false;
    return loop;
  };
}

/**
 * An owner for every key at once, then duplicates of every key every 100 ms for `dupMs`;
 * returns how each call ended: 'ok', '409' (in progress), an error's name, or 'HUNG' when
 * it had not settled after 12 s.
 */
export async function hammerKeys(
  keys: readonly string[],
  run: (key: string, role: 'owner' | 'dup') => Promise<unknown>,
  dupMs: number,
): Promise<string[]> {
  const outcomes: string[] = [];
  const settle = (p: Promise<unknown>) =>
    Promise.race([
      p.then(
        () => 'ok',
        (error: unknown) => (error instanceof InProgressError ? '409' : `${(error as Error).name}`),
      ),
      sleep(12_000).then(() => 'HUNG'),
    ]).then((o) => {
      outcomes.push(o);
    });
  const owners = keys.map((key) => settle(run(key, 'owner')));
  await sleep(100);
  const dups: Promise<void>[] = [];
  const t0 = performance.now();
  while (performance.now() - t0 < dupMs) {
    for (const key of keys) dups.push(settle(run(key, 'dup')));
    await sleep(100);
  }
  await Promise.all([...owners, ...dups]);
  return outcomes;
}
