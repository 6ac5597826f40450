// The mutation tests' one loop: which scenarios of the suite an integration fails.
import {
  type FrameworkDriver,
  httpScenarios,
  memoryStores,
  runScenario,
  type Scenario,
} from '../src/index.js';

/**
 * Names (`group: name`) of the scenarios of `scenarios` that fail on `driver`, each on a fresh
 * memory store; stops after `stopAfter` failures.
 */
export async function scenariosFailing(
  driver: FrameworkDriver,
  stopAfter = 1,
  scenarios: readonly Scenario[] = httpScenarios,
): Promise<string[]> {
  const stores = await memoryStores().setup();
  const failures: string[] = [];
  try {
    for (const scenario of scenarios) {
      try {
        await runScenario(driver, scenario, stores.create());
      } catch {
        failures.push(`${scenario.group}: ${scenario.name}`);
        if (failures.length >= stopAfter) break;
      }
    }
  } finally {
    await stores.close();
  }
  return failures;
}
