import { afterAll, beforeAll, describe, it } from 'vitest';
import type { Scenario } from './kit.js';
import type { HttpConformanceOptions } from './options.js';
import { runScenario } from './run.js';
import { httpScenarios } from './scenarios/index.js';
import { memoryStores, type StoreKind } from './stores.js';

/**
 * Registers the whole HTTP contract as vitest tests: for each store kind, one `describe`
 * per concern (protocol, key forms, outcomes, isolation, disconnects, throws after
 * acquisition, store faults, size limits), each scenario on a fresh app that
 * `options.start` brings up on loopback. Call it once from an integration's test file:
 *
 * ```ts
 * describeHttpConformance('koa', { start: async ({ options, routes }) => startKoaApp(options, routes) });
 * ```
 */
export function describeHttpConformance(name: string, options: HttpConformanceOptions): void {
  const stores: readonly StoreKind[] = options.stores ?? [memoryStores()];
  const timeout = options.timeoutMs ?? 30_000;
  for (const kind of stores) {
    describe(`HTTP conformance: ${name} on the ${kind.name} store`, () => {
      let factory: Awaited<ReturnType<StoreKind['setup']>> | undefined;
      beforeAll(async () => {
        factory = await kind.setup();
      }, timeout);
      afterAll(async () => {
        await factory?.close();
      }, timeout);
      for (const [group, scenarios] of byGroup(httpScenarios)) {
        describe(group, () => {
          for (const scenario of scenarios) {
            it(
              scenario.name,
              async () => {
                if (!factory) throw new Error(`The ${kind.name} store was not set up`);
                await runScenario(options, scenario, factory.create());
              },
              timeout,
            );
          }
        });
      }
    });
  }
}

function byGroup(scenarios: readonly Scenario[]): Map<string, Scenario[]> {
  const groups = new Map<string, Scenario[]>();
  for (const scenario of scenarios) {
    const list = groups.get(scenario.group) ?? [];
    list.push(scenario);
    groups.set(scenario.group, list);
  }
  return groups;
}
