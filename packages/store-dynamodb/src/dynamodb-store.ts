import type { AttributeValue } from '@aws-sdk/client-dynamodb';
import {
  type AcquireInput,
  type AcquireResult,
  blocksAcquire,
  type CompleteInput,
  checkClock,
  checkDuration,
  checkOutcome,
  checkPositiveInteger,
  type ExtendInput,
  elapsedClock,
  InvalidInputError,
  isManualClock,
  NOT_OWNER,
  OutcomeTooLargeError,
  OWNED,
  type OwnerWriteResult,
  ownerWriteResult,
  quotedInput,
  type ReleaseInput,
  readClock,
  type StoreCapabilities,
  type StoredRecord,
  StoreUnavailableError,
  systemClock,
} from '@idem/core';
import { createDynamoDbAdmin } from './dynamodb-admin.js';
import {
  ACQUIRE_BEGIN_CONDITION,
  ACQUIRE_BEGIN_UPDATE,
  ACQUIRE_CONTINUE_CONDITION,
  ACQUIRE_CONTINUE_UPDATE,
  CLOCK_STEP_MS,
  COMPLETE_UPDATE,
  COMPLETE_UPDATE_ENCODED,
  COMPLETED,
  CREATE_CONDITION,
  EXTEND_CONDITION,
  EXTEND_UPDATE,
  IN_PROGRESS,
  MAX_ACQUIRE_ATTEMPTS,
  MAX_HELD_LEASES,
  num,
  OWNED_CONDITION,
  OWNED_PUT_CONDITION,
  RELEASE_UPDATE,
  RELEASED,
  STRING_TYPE,
  TYPICAL_KEY_LENGTH,
  TYPICAL_OWNER_LENGTH,
  ttlOf,
} from './expressions.js';
import { createItemRequests, withEngineCall } from './item-requests.js';
import type { DynamoDbStore, DynamoDbStoreOptions } from './options.js';
import { holdsOutcome, packOutcome, unpackOutcome } from './outcome-compression.js';
import {
  checkOwner,
  checkSizes,
  createItemSchema,
  decodeItem,
  type ItemSchema,
  isWellFormed,
  itemKey,
  outcomeBudget,
  type RawRecord,
} from './record-item.js';
import { describeError } from './sdk-errors.js';
import { ensureTable } from './table.js';

/**
 * Creates a store that keeps records in a DynamoDB table. Every write is a conditional
 * request that either applies or returns the live item
 * (`ReturnValuesOnConditionCheckFailure: ALL_OLD`). Acquire is a PutItem of the new record
 * (`attribute_not_exists`, fence 1) for a key the table does not hold, and otherwise the
 * upsert: one conditional UpdateItem whose fence the service computes from the stored one,
 * in one of two forms by the record's origin rule (an expired item begins a new logical
 * request, a live one continues its own), picked from the item the create brought back or
 * the tombstone this store released. Complete and release, by the store that acquired, are a PutItem of the whole item on
 * owner, status, expiry, fence and lease (it knows every attribute the item holds), and an
 * UpdateItem on owner, status and expiry when it does not (another process, or a heartbeat
 * it did not see); extend is that UpdateItem. A role without `dynamodb:PutItem` gets the
 * UpdateItem forms. Reads are strongly consistent. Opens no connection and creates no
 * table.
 *
 * A request delivered twice (the SDK retries a request whose answer was lost) answers what
 * its first delivery would have (contract rule 7): an acquire that finds the caller's own
 * in-progress record renews its lease with one more owner-checked write and answers
 * `acquired` with the same fence; a complete that finds the record completed by the same
 * owner with the same outcome bytes answers `{ ok: true }` (the failed condition's ALL_OLD
 * item shows them, no extra request); a release that finds its own tombstone answers
 * `{ ok: true }`.
 */
export function createDynamoDbStore(options: DynamoDbStoreOptions): DynamoDbStore {
  const { client, tableName } = options;
  if (!client || typeof client.send !== 'function')
    throw new InvalidInputError('A DynamoDBClient is required');
  if (typeof tableName !== 'string' || tableName.length === 0)
    throw new InvalidInputError('tableName is required');
  if (!validTableName(tableName))
    throw new InvalidInputError(
      `tableName must be 3 to 255 characters of A-Z, a-z, 0-9, '_', '-' and '.' (DynamoDB's rule), or a table ARN; got ${quotedInput(tableName, 300)}`,
    );
  const compressAbove = options.compressAboveBytes ?? 4096;
  if (compressAbove !== false && !(Number.isSafeInteger(compressAbove) && compressAbove >= 0)) {
    throw new InvalidInputError('compressAboveBytes must be a non-negative integer or false');
  }
  const keyPrefix = options.keyPrefix ?? '';
  if (!isWellFormed(keyPrefix))
    throw new InvalidInputError('keyPrefix must be a well-formed string');
  const clock = checkClock(options.clock ?? systemClock);
  // Every clock but a ManualClock (any copy's, or a subclass) follows real time but for a step
  // (the default `Date.now`, an injected wall clock): its renewals are counted on elapsed time
  // too (see `countFrom`). A ManualClock decides as given (it stands still while real time
  // passes, or is advanced less than it).
  const wallClock = !isManualClock(clock);
  // Elapsed time, on core's monotonic clock (what the engine counts its lease estimate on):
  // anchored at `performance.timeOrigin` and read again when `performance` is another object,
  // so a test's fake timers swapping it (counting from their install) never read as the
  // process's whole uptime elapsed, or as time running backwards.
  const elapsed = elapsedClock(systemClock);
  const schema: ItemSchema = createItemSchema(
    {
      partitionKey: options.partitionKey ?? 'pk',
      single: options.singleTable && {
        partitionKeyValue: options.singleTable.partitionKeyValue,
        sortKey: options.singleTable.sortKey ?? 'sk',
      },
      keyPrefix,
    },
    options.attributes,
  );
  // What fits depends on how well an outcome compresses: the capability is the bound past
  // which nothing is tried, and `complete` measures the rest before writing.
  const maxOutcomeBytes = checkPositiveInteger(
    'maxOutcomeBytes',
    options.maxOutcomeBytes ??
      (compressAbove === false
        ? outcomeBudget(schema, 'k'.repeat(TYPICAL_KEY_LENGTH), 'o'.repeat(TYPICAL_OWNER_LENGTH))
        : 4 * 1024 * 1024),
  );
  const capabilities: StoreCapabilities = { clock: 'injectable', maxOutcomeBytes };

  const requestDeadlineMs = checkPositiveInteger(
    'requestDeadlineMs',
    options.requestDeadlineMs ?? 5_000,
  );
  if (requestDeadlineMs > MAX_TIMER_MS)
    throw new InvalidInputError(
      `requestDeadlineMs must be at most ${MAX_TIMER_MS} (the longest timer Node keeps); got ${requestDeadlineMs}`,
    );
  const requests = createItemRequests(client, tableName, schema, requestDeadlineMs);

  /**
   * What this process last wrote for an acquisition it holds, by owner token: enough to
   * write the whole item back on completion or release (one PutItem, conditional on the
   * owner, status, expiry, fence and lease) instead of an UpdateItem. Advisory only: a
   * missing or stale entry costs the UpdateItem, never a wrong write. A completion or release
   * that starts while another write of the lease is on its way (a heartbeat) does not wait
   * for it, which would tie its time to that request's (one that never answers would hold
   * the completion forever): it sends the UpdateItem, which does not need the lease.
   */
  interface HeldLease {
    key: string;
    fingerprint: string;
    /** The origin the acquisition wrote (or found, for a redelivery): written back whole. */
    origin: string;
    fence: number;
    leaseUntil: number;
    /**
     * The clock's reading the lease was last counted from (its write's `now`), and the
     * monotonic clock's (`elapsed`) at that reading: how far the clock should read now, had it not been
     * stepped back (see `countFrom`).
     */
    clockAt: number;
    monoAt: number;
    /** Writes of this lease on their way. */
    inFlight?: number;
    /** A completion or release was sent: the item is no longer known. */
    ended?: boolean;
  }
  const held = new Map<string, HeldLease>();
  function hold(lease: Omit<HeldLease, 'inFlight' | 'ended'> & { owner: string }): void {
    held.delete(lease.owner);
    if (held.size >= MAX_HELD_LEASES) {
      const oldest = held.keys().next();
      if (!oldest.done) held.delete(oldest.value);
    }
    held.set(lease.owner, {
      key: lease.key,
      fingerprint: lease.fingerprint,
      origin: lease.origin,
      fence: lease.fence,
      leaseUntil: lease.leaseUntil,
      clockAt: lease.clockAt,
      monoAt: lease.monoAt,
    });
  }
  // The attributes a record is made of. An item that holds any other (an operator's tag, an
  // attribute an application or another layout added) is never written whole: a PutItem
  // would drop what the UpdateItem keeps, so its completion is the UpdateItem.
  const ownAttributes = new Set<string>([
    schema.layout.partitionKey,
    ...(schema.layout.single ? [schema.layout.single.sortKey] : []),
    ...Object.values(schema.names),
  ]);
  const onlyOwnAttributes = (item: Record<string, AttributeValue>): boolean =>
    Object.keys(item).every((name) => ownAttributes.has(name));
  // Keys this store released, with the tombstone's expiry: their item exists, so their next
  // acquire goes straight to the upsert instead of a PutItem that would fail first (a retry
  // after a failed execution, on the same process), in the form the expiry picks (a live
  // tombstone continues its logical request, an expired one begins another). Bounded like
  // the held leases; a stale entry only costs the other form's request, sent on the item
  // the refused one brings back.
  const tombstones = new Map<string, number>();
  function rememberTombstone(key: string, expiresAt: number): void {
    tombstones.delete(key);
    if (tombstones.size >= MAX_HELD_LEASES) {
      const oldest = tombstones.keys().next();
      if (!oldest.done) tombstones.delete(oldest.value);
    }
    tombstones.set(key, expiresAt);
  }
  interface Turn {
    /**
     * The held lease, unless this store holds none for the key and owner, it ended, or
     * (`exclusive`) another write of it is on its way.
     */
    lease?: HeldLease;
    leave(): void;
  }
  const NO_TURN: Turn = { leave() {} };
  /** Counts this write of the key and owner's held lease; never waits. */
  function takeTurn(key: string, owner: string, exclusive: boolean): Turn {
    const lease = held.get(owner);
    if (lease === undefined || lease.key !== key) return NO_TURN;
    const busy = (lease.inFlight ?? 0) > 0;
    lease.inFlight = (lease.inFlight ?? 0) + 1;
    // A completion or release racing another write of the lease: the item is no longer known.
    if (exclusive && busy) end(owner, lease);
    let left = false;
    return {
      ...(lease.ended ? {} : { lease }),
      leave() {
        if (left) return;
        left = true;
        lease.inFlight = (lease.inFlight ?? 1) - 1;
      },
    };
  }
  /**
   * The reading a renewal of `lease` (this process's last write of it, if it has one) counts
   * from: the clock's, or, when the clock reads more than NTP slews (CLOCK_STEP_MS) behind
   * where the time elapsed since that write puts it, that point: the clock was stepped back
   * (NTP correcting a clock that ran ahead, an operator), and a renewal counted from its reading
   * would end the stored lease short by the step while core counts its estimate on elapsed
   * time from the send, so the executor's `signal` outlived the stored lease and a process with
   * a correct clock could take the key over beside it (the rev20 and rv21 reviews). (Its expiry
   * condition too: a lease that passed by that point is not this owner's any more.)
   * For a wall clock (the system clock, an injected one) whatever the step: it follows real
   * time, so reading behind it is a step (the rv21 review: a step smaller than the time since
   * the last write, the common one, left every later renewal short by it; so did any step of an
   * injected wall clock). For a ManualClock only when it reads earlier than at that write
   * (stepped back for sure): one that stands still or is advanced less than real time (the
   * conformance suite's) decides expiry by its own reading.
   */
  function countFrom(lease: HeldLease | undefined, now: number, nowMono: number): number {
    if (lease === undefined) return now;
    const unstepped = lease.clockAt + (nowMono - lease.monoAt);
    // Whole ms, as every deadline the store writes (the monotonic reading has a fraction).
    return unstepped - now > CLOCK_STEP_MS && (wallClock || now < lease.clockAt)
      ? Math.ceil(unstepped)
      : now;
  }
  function end(owner: string, lease: HeldLease): void {
    lease.ended = true;
    if (held.get(owner) === lease) held.delete(owner);
  }

  /**
   * The owner-checked write as a PutItem of the whole item (`item` plus what the held lease
   * knows). Answers `undefined` when it could not decide (the item is still this owner's
   * in-progress record but changed since: a heartbeat this store did not see; PutItem not
   * permitted), and the caller sends the UpdateItem.
   */
  async function ownerPut(
    operation: string,
    key: string,
    owner: string,
    now: number,
    lease: HeldLease,
    item: Record<string, AttributeValue>,
  ): Promise<{ ok: true } | { ok: false; found?: RawRecord } | undefined> {
    end(owner, lease);
    const { names } = schema;
    item[names.fingerprint] = { S: lease.fingerprint };
    item[names.owner] = { S: owner };
    item[names.origin] = { S: lease.origin };
    item[names.fence] = num(lease.fence);
    const result = await requests.create(operation, key, item, OWNED_PUT_CONDITION, {
      ':owner': { S: owner },
      ':inProgress': IN_PROGRESS,
      ':now': num(now),
      ':fence': num(lease.fence),
      ':heldLease': num(lease.leaseUntil),
    });
    if (result === undefined) return undefined;
    if (result.ok) return { ok: true };
    if (!result.item) return undefined;
    const found = decodeItem(schema, result.item);
    return ownRecord(found, 'in_progress', owner, now) ? undefined : { ok: false, found };
  }

  async function toRecord(raw: RawRecord): Promise<StoredRecord> {
    const record: StoredRecord = {
      status: raw.status,
      fingerprint: raw.fingerprint,
      owner: raw.owner,
      fence: raw.fence,
      leaseUntil: raw.leaseUntil,
      expiresAt: raw.expiresAt,
    };
    if (raw.origin !== undefined) record.origin = raw.origin;
    if (raw.outcome) record.outcome = await unpackOutcome(raw.outcome, raw.outcomeEncoding);
    return record;
  }

  /**
   * One conditional write on `owner = mine AND status = in_progress AND not expired`.
   * With `withFound`, a refused write also returns the record that refused it (from the
   * failed condition's ALL_OLD item, or a consistent read if the service sent none), so a
   * redelivered call can recognise its own earlier write.
   */
  async function ownerWrite(
    operation: string,
    key: string,
    owner: string,
    now: number,
    expression: string,
    values: Record<string, AttributeValue>,
    withFound = false,
  ): Promise<{ ok: true } | { ok: false; found?: RawRecord }> {
    checkSizes(schema, key);
    checkOwner(owner);
    const result = await requests.update(
      operation,
      key,
      expression,
      OWNED_CONDITION,
      { ...values, ':owner': { S: owner }, ':inProgress': IN_PROGRESS, ':now': num(now) },
      { onFailure: withFound },
    );
    if (result.ok) return { ok: true };
    if (!withFound) return { ok: false };
    const found = result.item ? decodeItem(schema, result.item) : await requests.read(key);
    return found ? { ok: false, found } : { ok: false };
  }

  /**
   * The owner-checked renewal of a lease to `leaseUntil` (a heartbeat, or a redelivered
   * acquire's): never moves the lease back. Answers the lease the record holds now: this one,
   * or a later one a renewal that landed first already gave it (then nothing is written).
   */
  async function renew(
    operation: string,
    key: string,
    owner: string,
    now: number,
    leaseUntil: number,
    expiresAt: number,
  ): Promise<{ ok: true; leaseUntil: number } | { ok: false }> {
    checkSizes(schema, key);
    checkOwner(owner);
    const written = await requests.update(
      operation,
      key,
      EXTEND_UPDATE,
      EXTEND_CONDITION,
      {
        ':leaseUntil': num(leaseUntil),
        ':expiresAt': num(expiresAt),
        ':ttl': ttlOf(expiresAt),
        ':owner': { S: owner },
        ':inProgress': IN_PROGRESS,
        ':now': num(now),
      },
      { onFailure: true },
    );
    if (written.ok) return { ok: true, leaseUntil };
    // The item that refused it came back with the refusal (ALL_OLD): no extra request; a
    // consistent read only when the service sent none back (older DynamoDB Local builds), as
    // for acquire and the other owner writes: else the owner's renewal that finds its lease
    // already later would answer not_owner, and core would end a live execution.
    // (A failed read throws its typed store error, as ownerWrite's does.)
    let found: RawRecord | undefined;
    if (!written.item) found = await requests.read(key);
    else
      try {
        found = decodeItem(schema, written.item);
      } catch {
        // Not a record of this store: not the caller's lease either.
      }
    return ownRecord(found, 'in_progress', owner, now) && found.leaseUntil > leaseUntil
      ? { ok: true, leaseUntil: found.leaseUntil }
      : { ok: false };
  }

  /** The record is unexpired, in `status` and held by `owner`: the caller's own earlier write. */
  const ownRecord = (
    found: RawRecord | undefined,
    status: RawRecord['status'],
    owner: string,
    now: number,
  ): found is RawRecord =>
    found !== undefined &&
    found.status === status &&
    found.owner === owner &&
    now < found.expiresAt;

  const store: DynamoDbStore = {
    capabilities,
    tableName,
    itemKey: (storageKey) => itemKey(schema, storageKey),
    ensureTable: (ensureOptions) =>
      ensureTable(client, tableName, schema, ensureOptions, requestDeadlineMs),
    admin: createDynamoDbAdmin(requests, schema, clock),

    async acquire(input: AcquireInput): Promise<AcquireResult> {
      checkSizes(schema, input.key, input.fingerprint);
      checkOwner(input.owner);
      const leaseMs = wholeMs('leaseMs', input.leaseMs);
      const retentionMs = wholeMs('retentionMs', input.retentionMs);
      // Attempt 0 is the create (skipped for a key this store released); up to
      // MAX_ACQUIRE_ATTEMPTS upserts follow, as before, each in the form the expiry of the
      // item last seen picks (see ACQUIRE_BEGIN_UPDATE): none seen, or expired, begins a new
      // logical request; a live one continues its own.
      const released = tombstones.get(input.key);
      tombstones.delete(input.key);
      let seenExpiresAt = released;
      const first = released === undefined ? 0 : 1;
      for (let attempt = first; attempt <= MAX_ACQUIRE_ATTEMPTS; attempt++) {
        const now = readClock(clock);
        const nowMono = elapsed.now();
        const leaseUntil = now + leaseMs;
        const expiresAt = leaseUntil + retentionMs;
        const continues = seenExpiresAt !== undefined && now < seenExpiresAt;
        // The first attempt creates the item if the key is new (the common case: one PutItem);
        // one that finds an item the key is free in (released, expired, lease passed) goes on
        // to the upsert, which computes the next fence from the stored one.
        const values: Record<string, AttributeValue> = {
          ':inProgress': IN_PROGRESS,
          ':fingerprint': { S: input.fingerprint },
          ':owner': { S: input.owner },
          ':zero': num(0),
          ':one': num(1),
          ':leaseUntil': num(leaseUntil),
          ':expiresAt': num(expiresAt),
          ':ttl': ttlOf(expiresAt),
          ':now': num(now),
        };
        if (continues) {
          values[':released'] = RELEASED;
          values[':string'] = STRING_TYPE;
        }
        const result =
          attempt === 0
            ? await requests.create(
                'acquire',
                input.key,
                {
                  [schema.names.status]: IN_PROGRESS,
                  [schema.names.fingerprint]: { S: input.fingerprint },
                  [schema.names.owner]: { S: input.owner },
                  [schema.names.origin]: { S: input.owner },
                  [schema.names.fence]: num(1),
                  [schema.names.leaseUntil]: num(leaseUntil),
                  [schema.names.expiresAt]: num(expiresAt),
                  [schema.names.ttl]: ttlOf(expiresAt),
                },
                CREATE_CONDITION,
              )
            : await requests.update(
                'acquire',
                input.key,
                continues ? ACQUIRE_CONTINUE_UPDATE : ACQUIRE_BEGIN_UPDATE,
                continues ? ACQUIRE_CONTINUE_CONDITION : ACQUIRE_BEGIN_CONDITION,
                values,
                { onSuccess: true, onFailure: true },
              );
        // PutItem not permitted: the upsert does it all.
        if (result === undefined) continue;
        if (result.ok) {
          const old = result.old;
          const previous = old && Object.keys(old).length > 0 ? decodeItem(schema, old) : undefined;
          const fence = (previous?.fence ?? 0) + 1;
          // The origin the write stored: the live item's, carried over (its owner's when it has
          // none), or this owner's for a key that was free.
          const origin = continues && previous ? (previous.origin ?? previous.owner) : input.owner;
          if (!old || onlyOwnAttributes(old))
            hold({ ...input, origin, fence, leaseUntil, clockAt: now, monoAt: nowMono });
          return {
            kind: 'acquired',
            fence,
            leaseUntil,
            // A lease that passed within retention: another owner's execution was cut short.
            takeover: previous?.status === 'in_progress' && now < previous.expiresAt,
            origin,
          };
        }
        // ALL_OLD brings the item that failed the condition; a consistent read only when the
        // service sent none back (older DynamoDB Local builds).
        const found = result.item
          ? decodeItem(schema, result.item)
          : await requests.read(input.key);
        seenExpiresAt = found?.expiresAt;
        if (ownRecord(found, 'in_progress', input.owner, now)) {
          // This very acquisition, delivered again (an SDK retry after a lost answer): it
          // keeps its fence and origin and renews its lease, owner-checked like a heartbeat,
          // and counted like one (a clock stepped back since its first delivery: the rv21
          // review).
          const prior = held.get(input.owner);
          const known = prior?.key === input.key ? prior : undefined;
          const from = countFrom(known, now, nowMono);
          const asked = from + leaseMs;
          const renewed = await renew(
            'acquire',
            input.key,
            input.owner,
            from,
            asked,
            asked + retentionMs,
          );
          const origin = found.origin ?? found.owner;
          if (renewed.ok) {
            // Counted from this reading when this renewal set the end, else from the write
            // that did (a reading after a step recorded as the count's start hid the step
            // from later renewals, and the stored lease stayed where it was).
            const counted =
              renewed.leaseUntil !== asked && known ? known : { clockAt: from, monoAt: nowMono };
            if (result.item && onlyOwnAttributes(result.item))
              hold({
                ...input,
                fingerprint: found.fingerprint,
                origin,
                fence: found.fence,
                leaseUntil: renewed.leaseUntil,
                clockAt: counted.clockAt,
                monoAt: counted.monoAt,
              });
            return { kind: 'acquired', fence: found.fence, leaseUntil, takeover: false, origin };
          }
          continue;
        }
        if (found && blocksAcquire(found, now))
          return { kind: 'found', record: await toRecord(found), now };
        // A free key that already has an item (the create's answer), an item that changed
        // between the write and the read, or one the other form of the upsert is for: the
        // upsert, with the new state.
      }
      throw new StoreUnavailableError(
        `DynamoDB acquire gave up after ${MAX_ACQUIRE_ATTEMPTS} attempts: the item keeps changing or is not an idem record`,
      );
    },

    async complete(input: CompleteInput): Promise<OwnerWriteResult> {
      checkSizes(schema, input.key);
      checkOwner(input.owner);
      const retentionMs = wholeMs('retentionMs', input.retentionMs);
      checkOutcome(input.outcome, maxOutcomeBytes);
      const rawBudget = outcomeBudget(schema, input.key, input.owner);
      const threshold = compressAbove === false ? false : Math.min(compressAbove, rawBudget + 1);
      const packed = await packOutcome(input.outcome, threshold);
      const limit = outcomeBudget(schema, input.key, input.owner, packed.encoding);
      if (packed.bytes.length > limit) throw new OutcomeTooLargeError(packed.bytes.length, limit);
      const now = readClock(clock);
      const expiresAt = now + retentionMs;
      const { names } = schema;
      const values: Record<string, AttributeValue> = {
        ':completed': COMPLETED,
        ':expiresAt': num(expiresAt),
        ':ttl': ttlOf(expiresAt),
        ':outcome': { B: packed.bytes },
      };
      if (packed.encoding !== undefined) values[':encoding'] = { S: packed.encoding };
      const expression = packed.encoding === undefined ? COMPLETE_UPDATE : COMPLETE_UPDATE_ENCODED;
      const turn = takeTurn(input.key, input.owner, true);
      try {
        const { lease } = turn;
        let written: Awaited<ReturnType<typeof ownerPut>>;
        if (lease) {
          const item: Record<string, AttributeValue> = {
            [names.status]: COMPLETED,
            [names.leaseUntil]: num(lease.leaseUntil),
            [names.expiresAt]: values[':expiresAt'] as AttributeValue,
            [names.ttl]: values[':ttl'] as AttributeValue,
            [names.outcome]: values[':outcome'] as AttributeValue,
          };
          if (packed.encoding !== undefined) item[names.outcomeEncoding] = { S: packed.encoding };
          written = await ownerPut('complete', input.key, input.owner, now, lease, item);
        }
        written ??= await ownerWrite(
          'complete',
          input.key,
          input.owner,
          now,
          expression,
          values,
          true,
        );
        if (written.ok) return OWNED;
        // Completed by this owner with the same outcome: this completion, delivered again.
        const { found } = written;
        return ownRecord(found, 'completed', input.owner, now) &&
          found.outcome !== undefined &&
          (await holdsOutcome(found.outcome, found.outcomeEncoding, packed, input.outcome))
          ? OWNED
          : NOT_OWNER;
      } catch (error) {
        // The budget is computed to DynamoDB's rules; should the service still find the item
        // too large, the write was rejected whole, so the typed error still holds.
        if (
          error instanceof StoreUnavailableError &&
          /item size/i.test(describeError(error.cause))
        ) {
          throw new OutcomeTooLargeError(packed.bytes.length, limit);
        }
        throw error;
      } finally {
        turn.leave();
      }
    },

    async release(input: ReleaseInput): Promise<OwnerWriteResult> {
      const retentionMs = wholeMs('retentionMs', input.retentionMs);
      checkSizes(schema, input.key);
      checkOwner(input.owner);
      const turn = takeTurn(input.key, input.owner, true);
      try {
        const now = readClock(clock);
        const expiresAt = now + retentionMs;
        const { names } = schema;
        const written =
          (turn.lease &&
            (await ownerPut('release', input.key, input.owner, now, turn.lease, {
              [names.status]: RELEASED,
              [names.leaseUntil]: num(now),
              [names.expiresAt]: num(expiresAt),
              [names.ttl]: ttlOf(expiresAt),
            }))) ??
          (await ownerWrite(
            'release',
            input.key,
            input.owner,
            now,
            RELEASE_UPDATE,
            { ':released': RELEASED, ':expiresAt': num(expiresAt), ':ttl': ttlOf(expiresAt) },
            true,
          ));
        // This owner's tombstone already: this release, delivered again.
        const found = written.ok ? undefined : written.found;
        if (written.ok) rememberTombstone(input.key, expiresAt);
        else if (ownRecord(found, 'released', input.owner, now))
          rememberTombstone(input.key, found.expiresAt);
        else return ownerWriteResult(false);
        return ownerWriteResult(true);
      } finally {
        turn.leave();
      }
    },

    async extend(input: ExtendInput): Promise<OwnerWriteResult> {
      const leaseMs = wholeMs('leaseMs', input.leaseMs);
      const retentionMs = wholeMs('retentionMs', input.retentionMs);
      const turn = takeTurn(input.key, input.owner, false);
      try {
        const { lease } = turn;
        const nowMono = elapsed.now();
        const now = countFrom(lease, readClock(clock), nowMono);
        const leaseUntil = now + leaseMs;
        const expiresAt = leaseUntil + retentionMs;
        const written = await renew('extend', input.key, input.owner, now, leaseUntil, expiresAt);
        // The held lease follows the heartbeat; a refused one is no longer this owner's.
        if (lease) {
          if (written.ok) {
            lease.leaseUntil = written.leaseUntil;
            // Counted from this reading when this renewal set the end.
            if (written.leaseUntil === leaseUntil) {
              lease.clockAt = now;
              lease.monoAt = nowMono;
            }
          } else end(input.owner, lease);
        }
        return written.ok ? ownerWriteResult(true, written.leaseUntil) : ownerWriteResult(false);
      } finally {
        turn.leave();
      }
    },

    async get(key: string): Promise<StoredRecord | undefined> {
      checkSizes(schema, key);
      const raw = await requests.read(key);
      if (!raw || readClock(clock) >= raw.expiresAt) return undefined;
      return toRecord(raw);
    },

    async close(): Promise<void> {
      // Nothing to free: the client belongs to the caller.
    },
  };
  // Each call's requests are also cut when the engine stops waiting for it (see
  // `withEngineCall`).
  const { acquire, complete, release, extend } = store;
  store.acquire = (input, call) => withEngineCall(call, () => acquire(input));
  store.complete = (input, call) => withEngineCall(call, () => complete(input));
  store.release = (input, call) => withEngineCall(call, () => release(input));
  store.extend = (input, call) => withEngineCall(call, () => extend(input));
  return store;
}

/** Longest timer Node keeps (longer ones fire at once). */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** DynamoDB's table names: 3 to 255 of `[A-Za-z0-9_.-]`. */
const TABLE_NAME = /^[A-Za-z0-9_.-]{3,255}$/;
/** A table ARN (`arn:<partition>:dynamodb:<region>:<account>:table/<name>`), which the API takes too. */
const TABLE_ARN = /^arn:[a-z0-9-]+:dynamodb:[a-z0-9-]+:\d{12}:table\/([A-Za-z0-9_.-]{3,255})$/;

/** Whether DynamoDB can take `name` as a `TableName`: a table name or a table ARN. */
function validTableName(name: string): boolean {
  return TABLE_NAME.test(name) || TABLE_ARN.test(name);
}

/**
 * A duration of a store call, checked (`checkDuration`) and rounded up to a whole ms, as the
 * Redis, PostgreSQL and memory stores do: a fractional lease would write a fractional
 * deadline, and a lease of 0.5 ms must not become 0 (store contract, "Bad input").
 */
function wholeMs(name: string, value: unknown): number {
  return Math.ceil(checkDuration(name, value));
}
