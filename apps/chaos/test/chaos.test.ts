import { describe, expect, it } from 'vitest';
import { profileFromEnv } from '../src/profile.js';
import { runChaos } from '../src/run.js';
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
      // leave the suite to this run).
      expect(result.nodes).toContain(process.version);
      expect(result.nodes.some((v) => v.startsWith('v24.'))).toBe(true);
      expect(formatBroken(result.rows), report.join('\n')).toEqual([]);
    },
    profile.runLimitMs + 180_000,
  );
});
