import { describe, expect, it } from 'vitest';
import { profileFromEnv } from '../src/profile.js';
import { runChaos } from '../src/run.js';
import { scenarios } from '../src/scenarios.js';
import { formatBroken, formatTable } from '../src/table.js';

// CI runs the short profile (CHAOS_PROFILE=full runs the sizes here too).
const profile = profileFromEnv({
  ...process.env,
  CHAOS_PROFILE: process.env.CHAOS_PROFILE ?? 'short',
});

describe(`chaos suite, ${profile.name} profile, against apps/llm-api/dist`, () => {
  it(
    'every promise holds in every row',
    async () => {
      const result = await runChaos(profile);
      const report = [formatTable(result.rows), ...result.skipped, ...formatBroken(result.rows)];
      // A broken row's timeline first: the CI log then says what happened, not only that it did.
      for (const row of result.rows) if (row.timeline) console.log(row.timeline.join('\n'));
      console.log(report.join('\n'));
      expect(result.rows.length).toBeGreaterThan(0);
      // The instances ran on this Node and on Node 24 (the Node 24 lanes of scripts/test.sh
      // leave the suite to this run), as the processes themselves say: every row of two
      // instances on two majors, and both majors across the run.
      const major = (version: string) => version.split('.')[0] ?? version;
      const ran = new Set<string>();
      for (const row of result.rows) {
        const majors = new Set((row.appNodes ?? []).map(major));
        for (const m of majors) ran.add(m);
        const instances = scenarios.find((s) => s.fault === row.fault)?.instances ?? 0;
        if (instances > 1)
          expect({ row: row.fault, majors: majors.size }).toEqual({ row: row.fault, majors: 2 });
      }
      expect([...ran].sort()).toEqual(
        [
          ...new Set([
            major(process.version),
            'v24',
            ...(process.version.startsWith('v24.') ? ['v20'] : []),
          ]),
        ].sort(),
      );
      expect(formatBroken(result.rows), report.join('\n')).toEqual([]);
    },
    profile.runLimitMs + 180_000,
  );
});
