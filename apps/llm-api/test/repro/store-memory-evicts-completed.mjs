// Repro (package @idem/store-memory as on this branch; issue 10 item 1, rewritten on main):
// when maxEntries is reached, makeRoom drops the oldest record that is not in progress,
// including a completed one inside its retention. Another caller's cheap keys push a
// tenant's completed charge out, and that tenant's retry runs again.
// Seen through llm-api (IDEM_MEMORY_MAX_ENTRIES=100): the victim's retry re-executed the model
// after 150 keyed requests of another bearer token.
// Run: node apps/llm-api/test/repro/store-memory-evicts-completed.mjs
import { createIdempotency } from '@idem/core';
import { createMemoryStore } from '@idem/store-memory';

const idem = createIdempotency({ store: createMemoryStore({ maxEntries: 10 }) });
let charges = 0;
const charge = async () => ({ charge: ++charges });
const victim = { key: 'victim-key', scope: ['victim', 'POST /charges'], fingerprint: 'f' };
await idem.execute(victim, charge);
for (let i = 0; i < 20; i++) {
  await idem.execute(
    { key: `k${i}`, scope: ['attacker', 'POST /charges'], fingerprint: 'f' },
    async () => 0,
  );
}
const retry = await idem.execute(victim, charge);
console.log(
  retry.replayed ? 'OK: replayed' : `BROKEN: the victim's charge ran again (${charges} charges)`,
);
