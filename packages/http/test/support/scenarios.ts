import { afterAll, beforeAll, describe, it } from 'vitest';
import { createBehaviours } from './behaviours.js';
import { send } from './client.js';
import type { FrameworkDriver, Scenario } from './scenario-kit.js';
import { OUTCOME_SCENARIOS } from './scenarios-outcomes.js';
import { PROTOCOL_SCENARIOS } from './scenarios-protocol.js';
import { downStore, STORE_KINDS, spyStore } from './stores.js';

export type { FrameworkDriver, ScenarioAppConfig } from './scenario-kit.js';
export { TENANT_HEADER } from './scenario-kit.js';

const SCENARIOS: Scenario[] = [...PROTOCOL_SCENARIOS, ...OUTCOME_SCENARIOS];

/**
 * The HTTP acceptance table, run over a real server of `driver` on loopback, once per
 * store kind (memory, real Redis). Each scenario gets a fresh app, store and key prefix.
 */
export function describeHttpScenarios(driver: FrameworkDriver): void {
  describe.each(STORE_KINDS)(`${driver.name} on the $name store`, (kind) => {
    let stores: Awaited<ReturnType<typeof kind.setup>>;
    beforeAll(async () => {
      stores = await kind.setup();
    });
    afterAll(async () => {
      await stores?.close();
    });

    it.each(SCENARIOS)('$name', async (scenario) => {
      const spy = spyStore(scenario.storeDown ? downStore(scenario.storeDown) : stores.create(), {
        completeDelayMs: scenario.completeDelayMs,
      });
      const behaviours = createBehaviours();
      const app = await driver.start({
        options: { store: spy.store, onWarning: () => {}, ...scenario.options },
        routes: behaviours.routes,
      });
      try {
        await scenario.run({
          post: (path, options) => send(app.url, path, options),
          calls: behaviours.calls,
          spy,
        });
      } finally {
        await app.close();
      }
    });
  });
}
