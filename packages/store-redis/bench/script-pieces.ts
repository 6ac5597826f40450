/**
 * Where a script's instructions go: stripped-down copies of the acquire script (a free key)
 * or the complete script, each adding one part, called with the store's arguments on fresh
 * keys; prints the instructions redis-server executed per call (callgrind), so that the
 * difference between two lines is what that part costs.
 *
 *   AB_CALLGRIND=<pid> REDIS_URL=redis://127.0.0.1:P PIECES=acquire|complete \
 *     pnpm --filter @idem/store-redis exec tsx bench/script-pieces.ts
 *
 * AB_CALLGRIND: a redis-server under callgrind (see `bench/script-ab.ts`); AB_CALLS per piece
 * (default 500), AB_ROUNDS (2). For `complete`, each key is first acquired (not counted).
 */
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import {
  ACQUIRE_LUA,
  COMPLETE_LUA,
  NOW,
  packDoubles,
  packDurations,
  READ,
  unpackDurations,
} from '../src/scripts.js';
import { callgrindInstructions } from './callgrind-count.js';
import { unlinkPrefix } from './unlink-prefix.js';

const url = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const pid = Number(process.env.AB_CALLGRIND);
if (!pid) throw new Error('AB_CALLGRIND: the pid of a redis-server under callgrind');
const CALLS = Number(process.env.AB_CALLS ?? 500);
const ROUNDS = Number(process.env.AB_ROUNDS ?? 2);
const complete = process.env.PIECES === 'complete';

const GET = `local v = redis.pcall('GET', KEYS[1])`;
const DURATIONS = unpackDurations(3, 'leaseMs', 'retentionMs', 'memory');
const FENCE = `local f = redis.call('INCR', KEYS[2])`;
const FENCE_EXPIRY = `redis.call('PEXPIREAT', KEYS[2], string.format('%d', now + 1000000))`;
const RECORD = `redis.call('SET', KEYS[1], struct.pack('>BBddddI4I4', 1, 1, f, now, now, now, #ARGV[2], #ARGV[1]) .. ARGV[2] .. ARGV[1], 'PXAT', string.format('%d', now + 100000))`;
const ACQUIRE_PIECES: Record<string, string> = {
  'return 1': 'return 1',
  '+ GET': `${GET} return 1`,
  '+ TIME, now': `${GET} ${NOW} return 1`,
  '+ durations': `${GET} ${NOW} ${DURATIONS} return 1`,
  '+ INCR fence': `${GET} ${NOW} ${DURATIONS} ${FENCE} return 1`,
  '+ PEXPIREAT fence': `${GET} ${NOW} ${DURATIONS} ${FENCE} ${FENCE_EXPIRY} return 1`,
  '+ SET PXAT record': `${GET} ${NOW} ${DURATIONS} ${FENCE} ${FENCE_EXPIRY} ${RECORD} return 1`,
  '+ table reply': `${GET} ${NOW} ${DURATIONS} ${FENCE} ${FENCE_EXPIRY} ${RECORD} return {1, f, now + 30000, 0}`,
  'the acquire script': ACQUIRE_LUA,
};
const MINE = `${READ}
if not st or string.sub(v, 43, 42 + ol) ~= ARGV[1] then return 0 end
${NOW}
if not (now < ex) then return 0 end`;
const DEADLINE = `local retentionMs, memory = struct.unpack('>dd', ARGV[2])
local expiresAt = math.min(now + retentionMs, 9007199254740991)
local at = string.format('%d', expiresAt - 1)`;
const EXPIRY = `redis.call('PEXPIREAT', KEYS[1], at)`;
const VALUE = `struct.pack('>BBdddd', fmt, 2, f, lu, expiresAt, fm) .. string.sub(v, 35) .. ARGV[3]`;
const COMPLETE_PIECES: Record<string, string> = {
  'return 1': 'return 1',
  '+ GET, header': `${READ} return 1`,
  '+ owner, TIME': `${MINE} return 1`,
  '+ deadline': `${MINE} ${DEADLINE} return 1`,
  '+ PEXPIREAT': `${MINE} ${DEADLINE} ${EXPIRY} return 1`,
  '+ value built': `${MINE} ${DEADLINE} ${EXPIRY} local x = ${VALUE} return 1`,
  '+ SET PXAT of it': `${MINE} ${DEADLINE} ${EXPIRY} redis.call('SET', KEYS[1], ${VALUE}, 'PXAT', at) return 1`,
  'the complete script': COMPLETE_LUA,
};

const prefix = `idem-pieces:${randomBytes(4).toString('hex')}:`;
const admin = new Redis(url);
const acquireDurations = packDurations(30_000, 86_400_000, 86_400_000);
const completeDurations = packDoubles(86_400_000, 86_400_000);
const outcome = Buffer.alloc(582, 0x78);
const fingerprint = 'f'.repeat(43);
const owner = (i: number) => `owner-${i}-${'x'.repeat(16)}`;
const figures: Record<string, number[]> = {};
try {
  const acquire = (await admin.script('LOAD', ACQUIRE_LUA)) as string;
  for (let round = 0; round < ROUNDS; round++) {
    for (const [name, lua] of Object.entries(complete ? COMPLETE_PIECES : ACQUIRE_PIECES)) {
      const sha = (await admin.script('LOAD', lua)) as string;
      const key = (i: number) => `${prefix}{${round}:${name}:${i}}`;
      const fresh = Array.from({ length: CALLS }, (_, i) => i);
      if (complete)
        await Promise.all(
          fresh.map((i) =>
            admin.evalsha(
              acquire,
              2,
              key(i),
              `${key(i)}:fence`,
              fingerprint,
              owner(i),
              acquireDurations,
            ),
          ),
        );
      callgrindInstructions(pid);
      await Promise.all(
        fresh.map((i) =>
          complete
            ? admin.evalsha(
                sha,
                2,
                key(i),
                `${key(i)}:fence`,
                owner(i),
                completeDurations,
                outcome,
                '0',
              )
            : admin.evalsha(
                sha,
                2,
                key(i),
                `${key(i)}:fence`,
                fingerprint,
                owner(i),
                acquireDurations,
              ),
        ),
      );
      figures[name] = [...(figures[name] ?? []), Math.round(callgrindInstructions(pid) / CALLS)];
    }
  }
  for (const [name, values] of Object.entries(figures))
    console.log(name.padEnd(22), values.join(' '));
} finally {
  await unlinkPrefix(admin, prefix);
  admin.disconnect();
}
