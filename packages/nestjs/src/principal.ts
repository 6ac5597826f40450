import type { JsonValue } from '@idem/core';
import type { ScopeHint } from '@idem/http';
import type { NestHttpRequest } from './options.js';

/**
 * The principal of a guard-set `request.user`: its `id`, else its `sub` (the JWT subject),
 * when that is a non-empty string or a finite number; undefined otherwise (no user, or one
 * with neither), which gives the request a 500 `no-principal` problem: nothing runs and no
 * two callers share a key space by accident. The rest of the user (roles, token times) is
 * left out on purpose: a retry with a refreshed token is the same caller.
 */
export function principalFromUser(user: unknown): string | number | undefined {
  if (typeof user !== 'object' || user === null) return undefined;
  const { id, sub } = user as { id?: unknown; sub?: unknown };
  for (const value of [id, sub]) {
    if (typeof value === 'string' && value !== '') return value;
    if (typeof value === 'number' && Number.isFinite(value)) return value;
  }
  return undefined;
}

/** The default scope hook: the principal of `request.user` ({@link principalFromUser}). */
export function userScope(request: NestHttpRequest): ScopeHint {
  return { principal: principalFromUser(request.user) as JsonValue as ScopeHint['principal'] };
}
