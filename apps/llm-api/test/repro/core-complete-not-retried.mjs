// Repro (package @idem/core, issue 11 item 3 "finish the completion"): when the store fails
// once while the final outcome is recorded (a connection reset during `complete`), the
// execution gives up at once. The key stays in progress until its lease passes, and the
// retry then takes it over and runs the operation a second time, although the store was
// back a few milliseconds later, well inside the lease. Seen from llm-api in the chaos
// suite's flaky-proxy row: every key that ran twice (1 to 3 of 100) had
// "Redis complete failed" in the app's log.
// Run: node apps/llm-api/test/repro/core-complete-not-retried.mjs
import { createIdempotency, StoreUnavailableError } from '@idem/core';
import { createMemoryStore } from '@idem/store-memory';

const store = createMemoryStore();
let failNextComplete = true;
const flaky = {
  ...store,
  capabilities: store.capabilities,
  complete: async (input) => {
    if (failNextComplete) {
      failNextComplete = false; // one failure: the store is back at once
      throw new StoreUnavailableError('connection reset while completing');
    }
    return store.complete(input);
  },
};
const idem = createIdempotency({ store: flaky, leaseMs: 300 });
let runs = 0;
const operation = async () => {
  runs += 1;
  return { charged: runs };
};
const request = { key: 'k-1', scope: ['tenant-1', 'POST /charges'], fingerprint: 'f' };
try {
  await idem.execute(request, operation);
} catch (error) {
  console.log(`first attempt: ${error.code}`);
}
await new Promise((resolve) => setTimeout(resolve, 400)); // the lease passes
const retried = await idem.execute(request, operation);
console.log(`retry: replayed=${retried.replayed}, value=${JSON.stringify(retried.value)}`);
console.log(runs === 1 ? 'OK: one run' : `BROKEN: the operation ran ${runs} times`);
process.exit(0);
