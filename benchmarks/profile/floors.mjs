/**
 * What each part of an in-process `execute()` costs, and what idem ÷ node-idempotency would be
 * without it: the built engine and memory store, copies of them each with one part taken out
 * (a patch of the built `dist`, applied in a temporary folder; the checkout is not touched),
 * node-idempotency's memory adapter and a raw `Map`, all in ONE process, rounds alternating,
 * CPU µs per call (median of the rounds) and node-idempotency's µs over each one's.
 *
 *   node --expose-gc profile/floors.mjs [--op cycle|replay] [--concurrency 1] [--calls 50000] [--rounds 6]
 *     [--packages ../packages] [--only idem,no-sha,...]
 *
 * The variants are measurements, not options: each one drops something idem guarantees.
 *   idem       as built
 *   no-sha     the storage key is the client's key as it is (no SHA-256: unbounded storage
 *              keys, and no isolation between scopes)
 *   no-hop     the operation starts inside `execute`'s call (no microtask before it)
 *   no-queues  the store keeps no lease, retention or release queue (nothing ever evicted)
 *   no-keep    (cycle) the store keeps no outcome: nothing to replay
 *   no-parse   (replay) the value is a stub read from the text, not a parsed copy (works only
 *              for this script's `{ key, data }` results)
 *   ni         @node-idempotency/core 1.0.11 on its memory adapter (the peer of the table)
 *   raw        two `Map` writes and `JSON.stringify` a cycle, one read a replay
 * With `--expose-gc` each round starts after a full collection (the rounds before leave their
 * records as garbage; without it their collection falls inside whichever round comes next).
 * Every patch must match the built text exactly, or the script stops: rebuild (`pnpm build`)
 * after changing the sources it patches.
 */
import { randomBytes } from 'node:crypto';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    packages: { type: 'string', default: new URL('../../packages', import.meta.url).pathname },
    op: { type: 'string', default: 'cycle' },
    concurrency: { type: 'string', default: '1' },
    calls: { type: 'string', default: '50000' },
    rounds: { type: 'string', default: '6' },
    only: { type: 'string' },
  },
});
const op = values.op;
const concurrency = Number(values.concurrency);
const calls = Number(values.calls);
const result = (key) => ({ key, data: 'x'.repeat(Math.max(0, 512 - 22 - key.length)) });

const patches = {
  'no-sha': [
    [
      'core',
      '  return storageKeyDigest(scope === null ? "null" : canonicalJson(scope), key);',
      '  return key;',
    ],
  ],
  'no-hop': [['core', '    if (!(answer instanceof Promise)) await void 0;', '    ;']],
  'no-queues': [['store-memory', '  track(slot) {\n', '  track(slot) {\n    return;\n']],
  'no-keep': [
    ['store-memory', 'const held = given ? outcome : hold(outcome);', 'const held = void 0;'],
  ],
  'no-parse': [
    [
      'core',
      '      value = JSON.parse(text);',
      `      value = { key: text.slice(8, text.indexOf('"', 8)) };`,
    ],
  ],
};
const applies = (name) => (op === 'cycle' ? name !== 'no-parse' : name !== 'no-keep');
let names = ['idem', ...Object.keys(patches).filter(applies), 'ni', 'raw'];
if (values.only) names = names.filter((name) => values.only.split(',').includes(name));

const temp = mkdtempSync(join(tmpdir(), 'idem-floors-'));
process.on('exit', () => rmSync(temp, { recursive: true, force: true }));

/** A copy of core and store-memory with `edits` applied to their built bundles. */
function patched(name, edits) {
  const root = join(temp, name);
  for (const pkg of ['core', 'store-memory']) {
    // `dereference: false` keeps store-memory's relative link to `../../../core`: the copy's core.
    cpSync(join(values.packages, pkg), join(root, pkg), {
      recursive: true,
      verbatimSymlinks: true,
    });
  }
  for (const [pkg, find, replace] of edits) {
    const file = join(root, pkg, 'dist/index.js');
    const text = readFileSync(file, 'utf8');
    if (text.split(find).length !== 2)
      throw new Error(`${name}: the built ${pkg} does not contain its patch once (rebuild?)`);
    writeFileSync(
      file,
      text.replace(find, () => replace),
    );
  }
  return root;
}

async function idemContender(root) {
  const core = await import(`${root}/core/dist/index.js`);
  const { createMemoryStore } = await import(`${root}/store-memory/dist/index.js`);
  return () => {
    const size = 2 * calls + 10_000;
    const store = createMemoryStore({ maxEntries: size, maxBytes: size * 4096 });
    const idem = core.createIdempotency({ store });
    return {
      close: () => store.close(),
      run: (key) => idem.execute({ key }, async () => result(key)),
      replay: (key) =>
        idem.execute({ key }, async () => {
          throw new Error('ran');
        }),
    };
  };
}

async function niContender() {
  const { Idempotency } = await import('@node-idempotency/core');
  const { MemoryStorageAdapter } = await import('@node-idempotency/storage-adapter-memory');
  const request = (key) => ({ method: 'POST', path: '/op', headers: { 'idempotency-key': key } });
  return () => {
    const ni = new Idempotency(new MemoryStorageAdapter(), { cacheKeyPrefix: 'ni' });
    const execute = async (key, operation) => {
      const req = request(key);
      const cached = await ni.onRequest(req);
      if (cached !== undefined) return { value: cached.body, replayed: true };
      const value = await operation();
      await ni.onResponse(req, { body: value });
      return { value, replayed: false };
    };
    return {
      close: () => {},
      run: (key) => execute(key, async () => result(key)),
      replay: (key) =>
        execute(key, async () => {
          throw new Error('ran');
        }),
    };
  };
}

function rawContender() {
  return () => {
    const map = new Map();
    return {
      close: () => {},
      run: async (key) => {
        if (map.has(key)) throw new Error('claimed');
        map.set(key, 'owner-token');
        const value = await (async () => result(key))();
        map.set(key, JSON.stringify(value));
        return { value, replayed: false };
      },
      replay: async (key) => {
        const text = map.get(key);
        return { value: { key, length: text.length }, replayed: true };
      },
    };
  };
}

const contenders = [];
for (const name of names) {
  let open;
  if (name === 'ni') open = await niContender();
  else if (name === 'raw') open = rawContender();
  else open = await idemContender(name === 'idem' ? values.packages : patched(name, patches[name]));
  contenders.push({ name, open });
}

async function round(contender) {
  const engine = contender.open();
  const pool = Array.from({ length: 256 }, (_, i) => `replay-${i}`);
  for (const key of pool) await engine.run(key);
  const run = randomBytes(4).toString('hex');
  let seq = 0;
  let next = 0;
  const one = async (i) => {
    if (op === 'cycle') {
      const key = `c-${run}-${seq++}`;
      const { replayed } = await engine.run(key);
      if (replayed) throw new Error(`${contender.name}: replayed`);
    } else {
      const key = pool[i % pool.length];
      const { replayed, value } = await engine.replay(key);
      if (!replayed || value.key !== key) throw new Error(`${contender.name}: not replayed`);
    }
  };
  const runAll = async (n) => {
    next = 0;
    const worker = async () => {
      while (next < n) await one(next++);
    };
    await Promise.all(Array.from({ length: concurrency }, worker));
  };
  await runAll(Math.min(5_000, calls / 5));
  // The rounds before left their records as garbage: collected now, not inside this round.
  globalThis.gc?.();
  const cpu0 = process.cpuUsage();
  await runAll(calls);
  const cpu = process.cpuUsage(cpu0);
  await engine.close();
  return (cpu.user + cpu.system) / calls;
}

const seen = new Map(contenders.map((c) => [c.name, []]));
for (let r = 0; r < Number(values.rounds); r++) {
  // A different order each round: no contender always runs after the same one.
  const shift = r % contenders.length;
  const order = [...contenders.slice(shift), ...contenders.slice(0, shift)];
  for (const contender of order) seen.get(contender.name).push(await round(contender));
  console.log(
    `round ${r + 1}: ${contenders.map((c) => `${c.name} ${seen.get(c.name).at(-1).toFixed(2)}`).join(', ')}`,
  );
}
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const ni = seen.has('ni') ? median(seen.get('ni')) : undefined;
const base = seen.has('idem') ? median(seen.get('idem')) : undefined;
console.log(`\nmemory ${op} c${concurrency}, CPU µs per call (median of ${values.rounds} rounds):`);
console.log('| variant | µs/call | less than idem | ni ÷ it |');
console.log('| --- | ---: | ---: | ---: |');
for (const { name } of contenders) {
  const us = median(seen.get(name));
  const saved = base === undefined || name === 'idem' ? '' : (base - us).toFixed(2);
  const ratio = ni === undefined ? '' : `${(ni / us).toFixed(2)}x`;
  console.log(`| ${name} | ${us.toFixed(2)} | ${saved} | ${ratio} |`);
}
