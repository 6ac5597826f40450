import type { IdemEvent, IdempotencyStore } from '@idem/core';
import { send } from './client.js';
import type { Scenario } from './kit.js';
import type { FrameworkDriver } from './options.js';
import { createRoutes } from './routes.js';
import { downStore, spyStore } from './stores.js';

/**
 * Runs one scenario on a fresh app of `driver` over `store` (a fresh store, unless the
 * scenario replaces it by a down one), and closes the app afterwards. Rejects with the
 * scenario's assertion error when the integration breaks the contract.
 */
export async function runScenario(
  driver: FrameworkDriver,
  scenario: Scenario,
  store: IdempotencyStore,
): Promise<void> {
  const spy = spyStore(scenario.storeDown ? downStore(scenario.storeDown) : store, scenario.faults);
  const { routes, calls } = createRoutes();
  const events: IdemEvent[] = [];
  const warnings: string[] = [];
  const app = await driver.start({
    options: {
      ...scenario.options,
      store: spy.store,
      onEvent: (event) => events.push(event),
      onWarning: (message) => warnings.push(message),
    },
    routes,
  });
  try {
    await scenario.run({
      post: (path, options) => send(app.url, path, options),
      calls,
      spy,
      events,
      warnings,
    });
  } finally {
    await app.close();
  }
}
