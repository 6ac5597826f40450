import { describe, expect, it } from 'vitest';
import { describeHttpConformance, httpScenarios, memoryStores, runScenario } from '../src/index.js';
import { type Bug, referenceDriver } from './reference-app.js';

// The baseline: a correct Web integration of @idem/http passes the whole suite.
describeHttpConformance('reference web integration', referenceDriver('none'));

/** Runs the scenarios whose names match `pattern` on `bug`; returns the names that failed. */
async function failingScenarios(bug: Bug, pattern: RegExp): Promise<string[]> {
  const selected = httpScenarios.filter((scenario) => pattern.test(scenario.name));
  expect(selected.length, `scenarios matching ${pattern}`).toBeGreaterThan(0);
  const stores = await memoryStores().setup();
  const failed: string[] = [];
  try {
    for (const scenario of selected) {
      try {
        await runScenario(referenceDriver(bug), scenario, stores.create());
      } catch {
        failed.push(scenario.name);
      }
    }
  } finally {
    await stores.close();
  }
  return failed;
}

describe('the suite bites: each broken integration fails the scenario written for it', () => {
  const cases: [Bug, RegExp][] = [
    ['ignores-the-key', /^runs concurrent identical requests once; without wait/],
    ['shares-principals', /^keeps the same key of two tenants apart/],
    ['shares-principals', /no-principal problem/],
    ['releases-on-disconnect', /client went away after its first chunk/],
    ['ends-before-recording', /^stores the outcome before the end/],
    ['raw-path-operation', /path variant/],
    ['ends-when-recording-failed', /^aborts a response whose outcome could not be stored/],
    ['first-of-repeated-headers', /repeated Idempotency-Key header/],
    ['reads-forever-after-disconnect', /^stops reading an endless stream/],
    ['hides-content-type', /^answers 422 to the same bytes sent as another media type/],
  ];
  for (const [bug, pattern] of cases) {
    it(`${bug} fails "${pattern.source}"`, async () => {
      const failed = await failingScenarios(bug, pattern);
      expect(failed.length, `scenarios that failed for ${bug}`).toBeGreaterThan(0);
    }, 60_000);
  }
});
