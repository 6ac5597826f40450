import { type ChildProcess, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterAll, expect, inject, it } from 'vitest';
import { DATABASE_URL, makePool, randomName, sleep } from './pg-env.js';

/**
 * Exactly once for database writes, proven by faults on the real server. Logical requests
 * (IDEM_FAULT_REQUESTS, default 150 in CI and 60 locally) are executed by 3 worker processes
 * at once, each with retries and 4 requests in flight, through the transactional engine;
 * each execution inserts one business row (no unique constraint: a duplicate would show).
 * For IDEM_FAULT_SECONDS (default 20 in CI, 8 locally) the test terminates the workers'
 * backends at random (`pg_terminate_backend`) and SIGKILLs whole workers, replacing them;
 * the workers also kill their own transaction's connection, or themselves, at random points
 * between the business write and the answer to COMMIT. Then one worker without faults
 * brings every request to its final answer. For every key: exactly one business row, a
 * completed record, and every answer any worker got is that row's id.
 */
const requests = Number(process.env.IDEM_FAULT_REQUESTS) || (process.env.CI ? 150 : 60);
const faultSeconds = Number(process.env.IDEM_FAULT_SECONDS) || (process.env.CI ? 20 : 8);
const WORKERS = 3;

const schema = inject('pgSchema');
const table = inject('pgTable');
const raw = makePool({ max: 2 });
afterAll(() => raw.end());

interface Answer {
  key: string;
  id: string;
  replayed: boolean;
}

it(
  `${requests} requests, ${WORKERS} processes, ${faultSeconds} s of killed connections and processes: one row per key, and a row exactly when an outcome is recorded`,
  async () => {
    const charges = `"${schema}".${randomName('fault_charges')}`;
    await raw.query(
      `CREATE TABLE ${charges} (id bigserial PRIMARY KEY, key text NOT NULL, fence bigint NOT NULL, worker text NOT NULL)`,
    );
    const scope = randomName('fault');
    const application = randomName('idem_fault');
    const keys = Array.from({ length: requests }, (_, i) => `order-${i}`);
    const answers: Answer[] = [];
    const summaries: Array<Record<string, number>> = [];
    let selfKills = 0;
    const crashes: string[] = [];
    let spawned = 0;

    function startWorker(
      rate: number,
      deadlineMs: number,
    ): { child: ChildProcess; done: Promise<number | null> } {
      const worker = `w${++spawned}`;
      const child = spawn(
        process.execPath,
        ['--import', 'tsx', fileURLToPath(new URL('./fault-worker.ts', import.meta.url))],
        {
          cwd: fileURLToPath(new URL('..', import.meta.url)),
          env: {
            ...process.env,
            DATABASE_URL,
            FAULT_KEYS: JSON.stringify(keys),
            FAULT_TABLE: table,
            FAULT_CHARGES: charges,
            FAULT_SCOPE: scope,
            FAULT_RATE: String(rate),
            FAULT_CONCURRENCY: '4',
            FAULT_DEADLINE_MS: String(deadlineMs),
            FAULT_WORKER: worker,
            FAULT_APPLICATION: application,
          },
          stdio: ['ignore', 'pipe', 'inherit'],
        },
      );
      createInterface({ input: child.stdout! }).on('line', (line) => {
        const message = JSON.parse(line);
        if (message.event === 'done') summaries.push(message.counts);
        else if (message.event === 'self_kill') selfKills++;
        else answers.push(message);
      });
      const done = new Promise<number | null>((resolve) =>
        child.on('exit', (code) => resolve(code)),
      );
      return { child, done };
    }

    // Fault phase: workers with faults of their own, replaced when they die; meanwhile
    // random backends of theirs are terminated and random workers SIGKILLed.
    const started = performance.now();
    const faultEnd = Date.now() + faultSeconds * 1_000;
    let terminated = 0;
    let killedWorkers = 0;
    const live = new Set<ChildProcess>();
    const running: Promise<unknown>[] = [];
    const keepWorker = async (): Promise<void> => {
      while (Date.now() < faultEnd) {
        const { child, done } = startWorker(0.1, Math.max(1_000, faultEnd - Date.now()));
        live.add(child);
        await done;
        live.delete(child);
      }
    };
    for (let i = 0; i < WORKERS; i++) running.push(keepWorker());
    while (Date.now() < faultEnd) {
      await sleep(50 + Math.random() * 150);
      const { rows } = await raw.query(
        'SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND pid <> pg_backend_pid() ORDER BY random() LIMIT 1',
        [application],
      );
      if (rows[0]) {
        const { rows: killed } = await raw.query('SELECT pg_terminate_backend($1) AS ok', [
          rows[0].pid,
        ]);
        if (killed[0]?.ok) terminated++;
      }
      if (Math.random() < 0.04 && live.size > 0) {
        const victims = [...live];
        victims[Math.floor(Math.random() * victims.length)]!.kill('SIGKILL');
        killedWorkers++;
      }
    }
    await Promise.all(running);
    const faultMs = performance.now() - started;

    // Recovery: one worker without faults brings every request to a final answer.
    const answersBefore = answers.length;
    const clean = startWorker(0, 60_000);
    expect(await clean.done, 'the clean worker exits normally').toBe(0);

    const finals = new Map<string, Set<string>>();
    for (const a of answers) {
      if (!finals.has(a.key)) finals.set(a.key, new Set());
      finals.get(a.key)!.add(a.id);
    }
    const { rows: rowCounts } = await raw.query(
      `SELECT key, count(*)::int AS n, min(id)::text AS id FROM ${charges} GROUP BY key`,
    );
    const business = new Map(
      rowCounts.map((r) => [r.key as string, r as { n: number; id: string }]),
    );
    const { rows: records } = await raw.query(
      `SELECT key, status FROM ${table} WHERE key = ANY($1)`,
      [keys.map((k) => deriveKey(scope, k))],
    );
    const status = new Map(records.map((r) => [r.key as string, r.status as string]));

    const duplicates = [...business.values()].filter((b) => b.n > 1).length;
    const mismatched: string[] = [];
    for (const key of keys) {
      const row = business.get(key);
      const completed = status.get(deriveKey(scope, key)) === 'completed';
      // A row exists exactly when a completed outcome exists, and it is one row.
      if ((row !== undefined) !== completed)
        mismatched.push(`${key}: row ${row?.n ?? 0}, record ${status.get(deriveKey(scope, key))}`);
      // Every answer any worker got is the committed row's id.
      const ids = [...(finals.get(key) ?? [])];
      if (ids.length !== 1 || ids[0] !== row?.id)
        mismatched.push(`${key}: answers ${ids.join(',')}, row ${row?.id}`);
    }
    const sum = (match: (name: string) => boolean) =>
      summaries.reduce(
        (n, s) => n + Object.entries(s).reduce((m, [k, v]) => m + (match(k) ? v : 0), 0),
        0,
      );
    const notCommitted = sum((k) => k === 'STORE_UNAVAILABLE');
    const selfTerminated = sum((k) => k.startsWith('terminate_') && k !== 'terminate_failed');
    console.log(
      `[fault] ${requests} requests x ${WORKERS} processes (${spawned} started, ${killedWorkers} SIGKILLed by the test, ${selfKills} killed themselves mid-transaction); ` +
        `${terminated} backends terminated by the test, ${selfTerminated} by workers between write and commit (workers that finished); ${answers.length} final answers (${answersBefore} during faults); ` +
        `${notCommitted} STORE_UNAVAILABLE answers in workers that finished; fault phase ${Math.round(faultMs)} ms; ` +
        `duplicates ${duplicates}; keys with one row ${[...business.values()].filter((b) => b.n === 1).length}/${requests}`,
    );
    expect(crashes).toEqual([]);
    expect(duplicates).toBe(0);
    expect(mismatched).toEqual([]);
    expect(business.size).toBe(requests);
    // The faults did hit: connections were terminated while requests were running.
    expect(terminated + selfKills).toBeGreaterThan(0);
  },
  (faultSeconds + 120) * 1_000,
);

import { deriveStorageKey } from '@idem/core';

/** The `key` column of a request's record: core's storage key (no key prefix here). */
function deriveKey(scope: string, key: string): string {
  return deriveStorageKey(scope, key);
}
