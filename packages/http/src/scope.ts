import { canonicalJson, InvalidInputError, type JsonValue } from '@idem/core';
import type { ScopeHint, ScopeHook } from './options.js';
import { PROBLEM_TYPES } from './problem.js';

/**
 * True for a principal, read as canonical JSON writes it (below), that names nobody, and so
 * would be the same for every anonymous caller: null, '' (what `header ?? ''` gives), or an
 * object or array with nothing else in it (what `{ tenant: user?.tenantId }` gives: canonical
 * JSON drops the undefined member, leaving `{}`). A parsed JSON value: no depth limit needed
 * beyond canonical JSON's own.
 */
function carriesNothing(value: JsonValue | undefined): boolean {
  if (value === undefined || value === null || value === '') return true;
  if (typeof value !== 'object') return false;
  return Object.values(value).every(carriesNothing);
}

/**
 * The principal a hook gave, as the storage key is derived from it, or undefined when it names
 * nobody. An object is read as canonical JSON writes it, once (`toJSON` results: an invalid
 * `Date` is `null`, a value object's `toJSON` may give `null` or `''`), so that what is checked
 * is what is hashed: read by its own members instead, an invalid `Date` or such a value object
 * passed the check and put every such caller under one principal, and a valid `Date` (no own
 * members) was refused. Canonical JSON of its own output is that output, so the storage keys of
 * accepted principals are unchanged. What canonical JSON refuses is passed on unchanged and
 * fails where the storage key is derived, as before.
 */
function checkedPrincipal(principal: unknown): JsonValue | undefined {
  if (principal === undefined || principal === null || principal === '') return undefined;
  if (typeof principal !== 'object') return principal as JsonValue;
  let written: JsonValue;
  try {
    written = JSON.parse(canonicalJson(principal as JsonValue)) as JsonValue;
  } catch {
    return principal as JsonValue;
  }
  return carriesNothing(written) ? undefined : written;
}

/** The principal and operation of one request, as the storage key is derived from them. */
export interface ResolvedScope {
  principal: JsonValue;
  operation?: string;
}

/**
 * Checks the required `scope` option and returns the function that resolves a request's
 * scope: `'global'` gives the null principal (which no hook can give), a hook gives its
 * principal, and a hook that gives none (undefined, null, '', or an object or array with
 * nothing but those in it) resolves to undefined (warned once).
 * @throws InvalidInputError when `scope` is neither a hook nor `'global'`
 * @internal
 */
export function createScopeResolver<R>(
  scope: ScopeHook<R> | 'global' | undefined,
  warn: (message: string) => void,
): (
  request: R,
  method: string,
  url: string,
) => ResolvedScope | undefined | Promise<ResolvedScope | undefined> {
  if (scope !== 'global' && typeof scope !== 'function') {
    throw new InvalidInputError(
      "The scope option is required: pass scope: (request) => ({ principal }) naming the tenant, user or API key a request acts for, or scope: 'global' for a single-tenant server where every caller shares one key space",
    );
  }
  // One answer for every request (read, never changed): no promise to make.
  const shared: ResolvedScope = { principal: null };
  if (scope === 'global') return () => shared;
  let warned = false;
  return async (request, method, url) => {
    const hint: Partial<ScopeHint> | undefined = await scope(request);
    const principal = hint ? checkedPrincipal(hint.principal) : undefined;
    if (hint && principal !== undefined) {
      return hint.operation === undefined
        ? { principal }
        : { principal, operation: hint.operation };
    }
    if (!warned) {
      warned = true;
      warn(
        `The scope hook gave no principal for ${method} ${url}: such requests get a 500 ${PROBLEM_TYPES.noPrincipal} problem. ` +
          "Return { principal } (tenant, user or API key id), run authentication before the idempotency layer, or use scope: 'global' for a single-tenant server.",
      );
    }
    return undefined;
  };
}
