/**
 * Candidate rewrites of the acquire and complete scripts against the scripts of this build, in
 * one run, alternating round by round: a free key's acquisition, its completion (a 582-byte
 * outcome) and a replay, 64 calls in flight, fresh keys, the arguments the store sends.
 * Prints µs of `INFO commandstats` per `EVALSHA`/`FCALL`, or with AB_CALLGRIND the
 * instructions redis-server executed per call (exact, unmoved by the machine's load).
 *
 *   REDIS_URL=redis://127.0.0.1:P pnpm --filter @idem/store-redis exec tsx bench/script-variants.ts
 *
 * Env: AB_CALLS per phase (default 8000), AB_ROUNDS (3), AB_ONLY (comma-separated variant
 * names), AB_CALLGRIND (pid of a redis-server under callgrind; see `bench/script-ab.ts`).
 * The variants are measurements only (README, Performance, "Fewer calls and cheaper Lua");
 * none is what the store runs. Keys live under a random prefix, deleted at the end.
 */
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import {
  ACQUIRE_LUA,
  COMPLETE_LUA,
  packDoubles,
  packDurations,
  unpackDurations,
} from '../src/scripts.js';
import { callgrindInstructions } from './callgrind-count.js';
import { unlinkPrefix } from './unlink-prefix.js';

const url = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const CALLS = Number(process.env.AB_CALLS ?? 8000);
const ROUNDS = Number(process.env.AB_ROUNDS ?? 3);
const BATCH = 64;
const only = (process.env.AB_ONLY ?? '').split(',').filter(Boolean);
const prefix = `idem-variants:${randomBytes(4).toString('hex')}:`;
const callgrind = process.env.AB_CALLGRIND ? Number(process.env.AB_CALLGRIND) : undefined;

function must(text: string, from: string, to: string): string {
  if (!text.includes(from)) throw new Error(`not in the script: ${from.slice(0, 60)}`);
  return text.replace(from, to);
}

// A never-seen key's fence memory by one `SET NX PXAT` (INCR + PEXPIREAT only when it exists).
const INCR = `if memory > 0 and not st then
  -- No record: the fence continues from the fence memory alone (kept + 1, or 1 without one),
  -- read and written by one INCR; then kept until the new record's deadline + memory.
  f = redis.call('INCR', KEYS[2])`;
const SET_NX = `if memory > 0 and not st and redis.REDIS_VERSION_NUM and redis.call('SET', KEYS[2], '1', 'NX', 'PXAT', string.format('%d', math.min(expiresAt + memory, 9007199254740991))) then
  f = 1
  fm = math.min(expiresAt + memory, 9007199254740991)
elseif memory > 0 and not st then
  f = redis.call('INCR', KEYS[2])`;
// The completion's first write, there only so that a full Redis still takes it (README).
const PEXPIREAT = `redis.call('PEXPIREAT', KEYS[1], at)\n`;
// The acquisition's answer as one string instead of a table of four numbers.
const TABLE_REPLY = 'return {1, f, leaseUntil, takeover}\n';
const STRING_REPLY = "return struct.pack('>Bddd', 1, f, leaseUntil, takeover)\n";
// The three durations with one `string.byte` call instead of three.
const bytes = Array.from({ length: 24 }, (_, i) => `b${i + 1}`);
const digits = (at: number) =>
  bytes.slice(at, at + 8).reduce((sum, b) => (sum ? `(${sum}) * 128 + ${b}` : b), '');
const ONE_BYTE_CALL = `local ${bytes.join(', ')} = string.byte(ARGV[3], 1, 24)
local leaseMs, retentionMs, memory = ${digits(0)}, ${digits(8)}, ${digits(16)}`;
const THREE_BYTE_CALLS = unpackDurations(3, 'leaseMs', 'retentionMs', 'memory');

type Variant = { acquire: string; complete: string; fcall?: boolean };
const allowOom = `#!lua flags=allow-oom\n${must(COMPLETE_LUA, PEXPIREAT, '')}`;
const variants: Record<string, Variant> = {
  base: { acquire: ACQUIRE_LUA, complete: COMPLETE_LUA },
  'fence-set-nx': { acquire: must(ACQUIRE_LUA, INCR, SET_NX), complete: COMPLETE_LUA },
  'complete-no-pexpireat': { acquire: ACQUIRE_LUA, complete: must(COMPLETE_LUA, PEXPIREAT, '') },
  'complete-allow-oom': { acquire: ACQUIRE_LUA, complete: allowOom },
  fcall: { acquire: ACQUIRE_LUA, complete: COMPLETE_LUA, fcall: true },
  'string-reply': {
    acquire: must(ACQUIRE_LUA, TABLE_REPLY, STRING_REPLY),
    complete: COMPLETE_LUA,
  },
  'one-byte-call': {
    acquire: must(ACQUIRE_LUA, THREE_BYTE_CALLS, ONE_BYTE_CALL),
    complete: COMPLETE_LUA,
  },
  combined: {
    acquire: must(must(ACQUIRE_LUA, TABLE_REPLY, STRING_REPLY), THREE_BYTE_CALLS, ONE_BYTE_CALL),
    complete: allowOom,
  },
};

const admin = new Redis(url);
const client = new Redis(url);
const acquireDurations = packDurations(30_000, 86_400_000, 86_400_000);
const completeDurations = packDoubles(86_400_000, 86_400_000);
const outcome = Buffer.alloc(582, 0x78);
const fingerprint = 'f'.repeat(43);
type Run = (keys: string[], args: (string | Buffer)[]) => Promise<unknown>;

async function load(name: string, variant: Variant): Promise<{ acquire: Run; complete: Run }> {
  if (variant.fcall) {
    const id = name.replace(/\W/g, '_');
    const library = `#!lua name=idem_variants_${id}
redis.register_function('acquire_${id}', function(KEYS, ARGV) ${variant.acquire} end)
redis.register_function('complete_${id}', function(KEYS, ARGV) ${variant.complete} end)`;
    await admin.call('FUNCTION', 'LOAD', 'REPLACE', library);
    return {
      acquire: (keys, args) => client.callBuffer('FCALL', `acquire_${id}`, 2, ...keys, ...args),
      complete: (keys, args) => client.call('FCALL', `complete_${id}`, 2, ...keys, ...args),
    };
  }
  const acquire = (await admin.script('LOAD', variant.acquire)) as string;
  const complete = (await admin.script('LOAD', variant.complete)) as string;
  return {
    acquire: (keys, args) => client.callBuffer('EVALSHA', acquire, 2, ...keys, ...args),
    complete: (keys, args) => client.evalsha(complete, 2, ...keys, ...args),
  };
}

async function usecPerCall(): Promise<number> {
  const text = await admin.info('commandstats');
  const found = /cmdstat_(?:evalsha|fcall):calls=(\d+),usec=(\d+)/.exec(text);
  return found ? Number(found[2]) / Number(found[1]) : Number.NaN;
}

async function phase(run: (i: number) => Promise<unknown>): Promise<number> {
  await admin.config('RESETSTAT');
  if (callgrind) callgrindInstructions(callgrind);
  for (let i = 0; i < CALLS; i += BATCH) {
    const batch: Promise<unknown>[] = [];
    for (let j = i; j < Math.min(CALLS, i + BATCH); j++) batch.push(run(j));
    await Promise.all(batch);
  }
  return callgrind ? callgrindInstructions(callgrind) / CALLS : usecPerCall();
}

const names = Object.keys(variants).filter((name) => only.length === 0 || only.includes(name));
const results: Record<string, Record<'acquire' | 'complete' | 'replay', number[]>> = {};
try {
  const loaded = new Map<string, { acquire: Run; complete: Run }>();
  for (const name of names) loaded.set(name, await load(name, variants[name]!));
  for (let round = 0; round < ROUNDS; round++) {
    for (const name of round % 2 === 0 ? names : [...names].reverse()) {
      const scripts = loaded.get(name)!;
      const keys = (i: number) => {
        const key = `${prefix}{${round}:${name}:${i}}`;
        return [key, `${key}:fence`];
      };
      const owner = (i: number) => `owner-${i}-${'x'.repeat(16)}`;
      const figures = results[name] ?? { acquire: [], complete: [], replay: [] };
      results[name] = figures;
      figures.acquire.push(
        await phase(async (i) => {
          const reply = await scripts.acquire(keys(i), [fingerprint, owner(i), acquireDurations]);
          if (!Buffer.isBuffer(reply) && Number((reply as unknown[])[0]) !== 1)
            throw new Error(`${name}: acquire not acquired`);
        }),
      );
      figures.complete.push(
        await phase(async (i) => {
          const reply = await scripts.complete(keys(i), [
            owner(i),
            completeDurations,
            outcome,
            '0',
          ]);
          if (Number(reply) !== 1) throw new Error(`${name}: complete answered ${reply}`);
        }),
      );
      figures.replay.push(
        await phase(async (i) => {
          const reply = await scripts.acquire(keys(i), [
            fingerprint,
            `other-${i}`,
            acquireDurations,
          ]);
          if (Number((reply as unknown[])[0]) !== 0) throw new Error(`${name}: replay not found`);
        }),
      );
    }
  }
  const median = (values: number[]) => [...values].sort((a, b) => a - b)[values.length >> 1]!;
  const digitsShown = callgrind ? 0 : 2;
  console.log(
    `${CALLS} calls a phase, ${ROUNDS} rounds; ${callgrind ? 'instructions' : 'µs'} a call, median (rounds)`,
  );
  for (const [name, figures] of Object.entries(results))
    console.log(
      name.padEnd(22),
      Object.entries(figures)
        .map(
          ([step, values]) =>
            `${step} ${median(values).toFixed(digitsShown)} (${values.map((v) => v.toFixed(digitsShown)).join(' ')})`,
        )
        .join(' | '),
    );
} finally {
  await unlinkPrefix(admin, prefix);
  client.disconnect();
  admin.disconnect();
}
