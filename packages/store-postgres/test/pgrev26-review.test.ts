import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { RenewalConnection } from '../src/renewal-connection.js';
import { pollUntil, sleep, uploadGuardsRunning } from './pg-env.js';
import { ownSetUpStalls } from './pgrev21-proxy.js';
import { startPgrev22Proxy } from './pgrev22-proxy.js';
import { localPortOf } from './rcrev2-proxy.js';
import { insertCharge } from './take-over.js';
import { copyIn, copyLines, reviewSchema } from './upload-guard-helpers.js';

/**
 * Adversarial review (storerev23) of the merge "wt/storefix" in store-postgres: the upload
 * guard watching the whole statement (a large Bind after its Parse held in node-postgres'
 * corked write, every `COPY ... FROM STDIN`, large completions) and a resent renewal growing a
 * pool connection past idle ones (`newClient`). Own schema (`pgrev26r_*`).
 */
const APP = 'pgrev26r-review';
const { schema, charges, raw, onDirectPool } = reviewSchema('pgrev26r', APP, 3);

/** Business rows of `scope` committed. */
const chargesOf = async (scope: string) =>
  Number(
    (await raw.query(`SELECT count(*)::int AS n FROM ${charges} WHERE scope = $1`, [scope])).rows[0]
      .n,
  );

/** Backends running a guard's loop for this file's table now. */
const guardsRunning = () => uploadGuardsRunning(raw, schema);

/**
 * Runs each of `statements` (a `COPY ... TO STDOUT` as it is, any other as a COPY of three
 * lines into `copied`) in one execution, after a temporary table `copied (v text)` was made;
 * what each did (whether it answered, the guards armed for it) and the rows copied.
 */
async function copies(
  prefix: string,
  statements: readonly string[],
): Promise<{ seen: Record<string, { answer: string; guards: number }>; rows: string }> {
  const { pool, counts, scope, engine } = onDirectPool(4, prefix);
  const seen: Record<string, { answer: string; guards: number }> = {};
  try {
    const { value } = await engine.execute({ key: 'k', scope }, async ({ tx, fence }) => {
      await insertCharge(tx, charges, scope, fence);
      await tx.query('CREATE TEMP TABLE copied (v text) ON COMMIT DROP');
      for (const statement of statements) {
        const before = counts.armed;
        const answer = await (statement.includes('TO STDOUT')
          ? tx.query(statement)
          : copyIn(tx, 'copied', copyLines(3, 5), statement)
        ).then(
          () => 'ok',
          (error: { code?: string }) => error.code ?? 'failed',
        );
        seen[statement] = { answer, guards: counts.armed - before };
      }
      const { rows } = await tx.query('SELECT count(*)::int AS n FROM copied');
      return String(rows[0].n);
    });
    expect(await pollUntil(guardsRunning, (n) => n === 0, 3_000)).toBe(0);
    return { seen, rows: value };
  } finally {
    await pool.end();
  }
}

describe('pgrev26 review: upload guard', () => {
  // FINDING medium (bounded resources), fixed: a guard watched "until the statement's
  // ReadyForQuery" by polling pg_stat_activity every 50 ms for the backend idle in its
  // transaction. When the operation sends its statements back to back (the backend busy most
  // of the time), the short idle gaps between them fell between two polls: a guard went on
  // watching the next statements, and the next large statement armed another guard beside it.
  // Guards piled up (4 seen here on the merged source), one pool connection each, up to the
  // pool's size: the application's own requests then waited for the pool. Correct: a guard
  // ends with what it stands in for (at most one running per transaction, one more while the
  // next one arms). Fixed: once armed, the guard remembers when the backend began the message
  // it saw it read or run (`state_change` of the first `active` it sees) and returns when that
  // changes (the backend moved on to the statement's next message or the next statement: no
  // message of its was still arriving), besides at the statement's ReadyForQuery. A message
  // on its way, or a COPY's data, never changes it (pgrev25's mid-Bind and mid-COPY freezes
  // still end the frozen owner's transaction).
  it('a loop of large statements (100 KB parameters, each running 60 ms): guards never pile up beyond two, the pool keeps free connections', async () => {
    const { pool, scope, engine } = onDirectPool(8, 'pile');
    const peak = { guards: 0, busy: 0 };
    let sampling = true;
    // Sampled from outside every 20 ms (a query on the transaction's connection would leave
    // the guards an idle gap to see).
    const sampler = (async () => {
      while (sampling) {
        peak.guards = Math.max(peak.guards, await guardsRunning());
        peak.busy = Math.max(peak.busy, pool.totalCount - pool.idleCount);
        await sleep(20);
      }
    })();
    try {
      const outcome = await engine.execute({ key: 'k', scope }, async ({ tx, fence }) => {
        await insertCharge(tx, charges, scope, fence);
        for (let i = 0; i < 12; i++)
          await tx.query('SELECT length($1::text) AS n, pg_sleep(0.06)', ['p'.repeat(100_000)]);
        return 'done';
      });
      sampling = false;
      await sampler;
      expect(outcome.value).toBe('done');
      console.log('pgrev26 pile', peak);
      expect(peak.guards).toBeLessThanOrEqual(2);
      // The business transaction and at most two guards.
      expect(peak.busy).toBeLessThanOrEqual(3);
      expect(await pollUntil(guardsRunning, (n) => n === 0, 3_000)).toBe(0);
    } finally {
      sampling = false;
      await sampler;
      await pool.end();
    }
  }, 30_000);

  // The first case held. The second: FINDING low (bad input), fixed: a COPY was told by its
  // first word and "from stdin" anywhere in its text. A COPY after a leading comment (a
  // statement read from a .sql file: "-- load\nCOPY ...") was not guarded, so an owner frozen
  // mid-COPY kept the record's row for as long as TCP kept the connection (bounded time, as in
  // pgrev25's mid-COPY test); and `COPY (SELECT 'from stdin') TO STDOUT` (a query's text,
  // never an upload) took a guard: a pool connection and a few round trips before it was sent.
  // Correct: comments before the first word are skipped, and a COPY of a query (its first
  // word followed by a parenthesis) is never a COPY FROM STDIN (src/upload-guard.ts
  // `copiesIn`, `skipBlanks`).
  for (const [title, prefix, statements] of [
    [
      'bad input: COPY spelt in lower case, after blanks and line breaks, with its words on two lines: guarded; COPY ... TO STDOUT: no guard; all answer right',
      'variants',
      {
        'copy copied from stdin': 1,
        ' \n\t COPY copied FROM\n  STDIN': 1,
        'COPY copied TO STDOUT': 0,
      },
    ],
    [
      "bad input: a COPY FROM STDIN after a line comment or a nested block comment is guarded; COPY (SELECT 'from stdin') TO STDOUT is not",
      'comments',
      {
        '-- load the rows\nCOPY copied FROM STDIN': 1,
        '/* a /* nested */ comment */ COPY copied FROM STDIN': 1,
        "COPY (SELECT 'from stdin' AS v) TO STDOUT": 0,
      },
    ],
  ] as const) {
    it(title, async () => {
      const { seen, rows } = await copies(prefix, Object.keys(statements));
      expect(rows).toBe('6');
      expect(seen).toEqual(
        Object.fromEntries(
          Object.entries(statements).map(([text, guards]) => [text, { answer: 'ok', guards }]),
        ),
      );
    });
  }

  it('bad input: a COPY FROM STDIN the server refuses (bad data; a missing table): the guard ends with it, nothing commits', async () => {
    const { pool, counts, scope, engine } = onDirectPool(4, 'copyfail');
    try {
      for (const [key, text] of [
        ['bad-data', 'COPY nums FROM STDIN'],
        ['no-table', 'COPY no_such_table FROM STDIN'],
      ] as const) {
        const before = counts.armed;
        const outcome = await engine
          .execute({ key, scope }, async ({ tx, fence }) => {
            await insertCharge(tx, charges, scope, fence);
            await tx.query('CREATE TEMP TABLE nums (n int) ON COMMIT DROP');
            await copyIn(tx, 'nums', Buffer.from('1\nnot a number\n'), text);
            return 'copied';
          })
          .then(
            () => 'completed',
            (error: { code?: string; cause?: { code?: string } }) =>
              error.code ?? error.cause?.code ?? 'failed',
          );
        expect(outcome).toBe(key === 'bad-data' ? '22P02' : '42P01');
        expect(counts.armed - before).toBe(1);
        expect(await pollUntil(guardsRunning, (n) => n === 0, 3_000)).toBe(0);
      }
      expect(await chargesOf(scope)).toBe(0);
    } finally {
      await pool.end();
    }
  });

  it("a COPY in a transaction the operation opened itself (after its own COMMIT): no guard armed for a transaction that is not the record's, the COPY answers, nothing is ended", async () => {
    const { pool, counts, scope, engine } = onDirectPool(4, 'owntx');
    let pid = 0;
    let copiedRows = -1;
    try {
      await engine
        .execute({ key: 'k', scope }, async ({ tx, fence }) => {
          pid = (tx as unknown as { processID: number }).processID;
          await insertCharge(tx, charges, scope, fence);
          await tx.query('COMMIT');
          await tx.query('BEGIN');
          await tx.query('CREATE TEMP TABLE mine (v text) ON COMMIT DROP');
          await copyIn(tx, 'mine', copyLines(100, 50), 'COPY mine FROM STDIN');
          copiedRows = Number((await tx.query('SELECT count(*)::int AS n FROM mine')).rows[0].n);
          await tx.query('COMMIT');
          return 'done';
        })
        .catch(() => {});
      expect(copiedRows).toBe(100);
      expect(counts.armed).toBe(0);
      expect(await pollUntil(guardsRunning, (n) => n === 0, 3_000)).toBe(0);
      // The owner's backend lives on (back in the pool).
      expect(
        (await raw.query('SELECT count(*)::int AS n FROM pg_stat_activity WHERE pid = $1', [pid]))
          .rows[0].n,
      ).toBe(1);
    } finally {
      await pool.end();
    }
  });

  it('connection errors mid-guard: the business socket destroyed while a large Bind waits corked for its guard: the execution fails at once, nothing of it commits, the guard is never armed and ends, the pool recovers', async () => {
    const { pool, counts, scope, engine } = onDirectPool(4, 'corkcut');
    let corked = -1;
    let cutAt = 0;
    try {
      const outcome = await engine
        .execute({ key: 'k', scope }, async ({ tx, fence }) => {
          await insertCharge(tx, charges, scope, fence);
          const stream = (tx as unknown as { connection: { stream: import('node:net').Socket } })
            .connection.stream;
          const sent = tx.query('SELECT length($1::text) AS n', ['c'.repeat(300_000)]);
          // Held corked while the guard arms: nothing of the statement left yet.
          corked = stream.writableCorked;
          cutAt = performance.now();
          stream.destroy();
          await sent;
          return 'unreachable';
        })
        .then(
          () => 'completed',
          (error: Error) => error.name,
        );
      const failedAfterMs = performance.now() - cutAt;
      expect(corked).toBe(1);
      expect(outcome).not.toBe('completed');
      expect(failedAfterMs).toBeLessThan(1_000);
      expect(await chargesOf(scope)).toBe(0);
      await sleep(300);
      expect(await pollUntil(guardsRunning, (n) => n === 0, 5_000)).toBe(0);
      expect(counts.armed).toBe(0);
      // The pool serves again.
      expect((await pool.query('SELECT 1 AS one')).rows[0].one).toBe(1);
    } finally {
      await pool.end();
    }
  });
});

describe('pgrev26 review: a resent renewal grows past idle connections (newClient)', () => {
  const STATEMENT_MS = 1_500;

  /** A pool of `max` behind a pgrev22 proxy; the set-up of the engine's own connection stalls. */
  async function stalledOwn(max: number) {
    const proxy = await startPgrev22Proxy();
    const pool = new pg.Pool({
      connectionString: proxy.url,
      max,
      onConnect: ownSetUpStalls(STATEMENT_MS),
    } as unknown as pg.PoolConfig);
    pool.on('error', () => {});
    return { proxy, pool };
  }

  /**
   * A pool of `max` behind a proxy, `dead` idle connections whose flows a NAT dropped, the own
   * opening stalling for good; `renewals` repeatable statements at once (plus, in the same
   * ticks, `appConnects` of the application's pool.connect()). Peak of the pool's clients and
   * of the connections the proxy accepted at once, against max.
   */
  async function race(max: number, dead: number, renewals: number, appConnects: number) {
    const { proxy, pool } = await stalledOwn(max);
    let peak = 0;
    const sample = () => {
      peak = Math.max(peak, pool.totalCount);
    };
    pool.on('connect', sample);
    pool.on('acquire', sample);
    const timer = setInterval(sample, 2);
    try {
      const warm = [];
      for (let i = 0; i < dead; i++) warm.push(await pool.connect());
      for (const c of warm) {
        c.on('error', () => {});
        proxy.freeze(localPortOf(c));
        c.release();
      }
      const rc = new RenewalConnection(pool, STATEMENT_MS, STATEMENT_MS);
      const done = rc.use();
      const sent = Array.from({ length: renewals }, () =>
        rc.repeatable
          .query({ text: 'SELECT 1', query_timeout: STATEMENT_MS } as pg.QueryConfig)
          .then(
            () => 'ok',
            (e: Error) => `failed ${e.name} ${e.message.slice(0, 60)}`,
          ),
      );
      const app = Array.from({ length: appConnects }, async (_, i) => {
        await sleep(520 + i * 3);
        sample();
        const c = await Promise.race([pool.connect(), sleep(1_200).then(() => undefined)]);
        sample();
        c?.release();
      });
      const answers = await Promise.all(sent);
      await Promise.all(app);
      done();
      return { answers, peak, total: pool.totalCount };
    } finally {
      clearInterval(timer);
      await Promise.race([pool.end(), sleep(3_000)]);
      proxy.close();
    }
  }

  it('40 renewals resent at once on a pool of 6 with 4 dead idle connections, the application connecting meanwhile: the pool never holds more than max connections', async () => {
    const r = await race(6, 4, 40, 6);
    console.log('pgrev26 newClient race', { ...r, answers: r.answers.filter((a) => a !== 'ok') });
    expect(r.peak).toBeLessThanOrEqual(6);
    // New connections were grown past the dead idle ones (each renewal answered on one).
    expect(r.answers.filter((a) => a === 'ok').length).toBeGreaterThan(30);
  }, 20_000);

  // FINDING low (pre-existing, not from the merge; the same family as pgrev22): a renewal sent
  // again while the pool is at its max has no route but the own connection (its opening
  // stalling) or a pool connection given back alive while it waits. With two of three idle
  // flows dead and one live idle connection in the pool, nothing is given back: the renewal
  // fails at its limit although a live connection sat idle (the design refuses idle ones to a
  // statement sent again, which cannot tell them apart). Correct: within its limit, a statement
  // with no other route left tries the idle connections too (each dead one it finds is
  // dropped, which makes room for a new one).
  it.fails('pool at max, two dead idle flows and one live idle connection, the own opening stalling: a renewal reaches the live one within its limit', async () => {
    const { proxy, pool } = await stalledOwn(3);
    try {
      const [live, a, b] = [await pool.connect(), await pool.connect(), await pool.connect()];
      for (const c of [live, a, b]) c?.on('error', () => {});
      // The live one at the bottom of the pool's idle stack, the dead ones above it.
      live?.release();
      for (const c of [a, b]) {
        proxy.freeze(localPortOf(c));
        c?.release();
      }
      const rc = new RenewalConnection(pool, STATEMENT_MS, STATEMENT_MS);
      const done = rc.use();
      const answer = await rc.repeatable
        .query({ text: 'SELECT 1', query_timeout: STATEMENT_MS } as pg.QueryConfig)
        .then(
          () => 'ok',
          (e: Error) => e.message,
        );
      done();
      expect(answer).toBe('ok');
    } finally {
      await Promise.race([pool.end(), sleep(3_000)]);
      proxy.close();
    }
  }, 15_000);
});
