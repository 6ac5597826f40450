import { canonicalJson, InvalidInputError, type JsonValue } from '@idem/core';
import type { ScopeHint, ScopeHook } from './options.js';
import { PROBLEM_TYPES } from './problem.js';

/**
 * True for a value that names nobody, and so would be the same for every anonymous caller:
 * undefined, null, '' (what `header ?? ''` gives), or an object or array with nothing else in
 * it (what `{ tenant: user?.tenantId }` gives: canonical JSON drops the undefined member,
 * leaving `{}`). An object without own members (a `Date`, a `Map`) names nobody either: a
 * principal is a JSON value.
 */
function carriesNothing(value: unknown, depth: number, maxDepth = 32): boolean {
  if (value === undefined || value === null || value === '') return true;
  if (typeof value !== 'object' || depth > maxDepth) return false;
  return Object.values(value).every((member) => carriesNothing(member, depth + 1, maxDepth));
}

/**
 * Whether a hook's principal names nobody: by its own members (above), and as canonical JSON
 * writes it, the value its storage key is derived from (`toJSON` results: a value object whose
 * `toJSON` gives `null` or `''` beside own members, or `{}` nested past the depth read above,
 * named somebody by its members alone, and put every such caller under one principal). What
 * canonical JSON refuses is left to fail where the storage key is derived, as before.
 */
function namesNobody(principal: unknown): boolean {
  if (carriesNothing(principal, 0)) return true;
  if (typeof principal !== 'object') return false;
  let written: unknown;
  try {
    written = JSON.parse(canonicalJson(principal as JsonValue));
  } catch {
    return false;
  }
  // A parsed JSON value: no depth limit beyond canonical JSON's own.
  return carriesNothing(written, 0, Number.POSITIVE_INFINITY);
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
    const principal = hint?.principal;
    if (hint && principal !== undefined && principal !== null && !namesNobody(principal)) {
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
