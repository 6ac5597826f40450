import type { JsonValue } from '@idem/core';
import type { ScopeHint } from '@idem/http';
import type { NestHttpRequest } from './options.js';

/** The principal {@link principalFromUser} gives: an id, a subject, or a subject with its issuer. */
export type UserPrincipal = string | number | { iss: string; sub: string | number };

/**
 * The principal of a guard-set `request.user`: its `id`, else its `sub` (the JWT subject),
 * when that is a non-empty string or a finite number; undefined otherwise (no user, or one
 * with neither), which gives the request a 500 `no-principal` problem: nothing runs and no
 * two callers share a key space by accident. A subject is unique only within its issuer
 * (OpenID Connect: the pair `iss`, `sub` names the user): with a non-empty string `iss`
 * beside it, the principal is both (`{ iss, sub }`), so that the same subject from two
 * identity providers is two callers. With an `iss` that is neither a string nor null (a
 * number, an object) there is no principal: such an issuer is never dropped, which would make
 * one caller of the same subject from two issuers. The rest of the user (roles, token times)
 * is left out on purpose: a retry with a refreshed token is the same caller.
 */
export function principalFromUser(user: unknown): UserPrincipal | undefined {
  if (typeof user !== 'object' || user === null) return undefined;
  const { id, sub, iss } = user as { id?: unknown; sub?: unknown; iss?: unknown };
  if (isIdentifier(id)) return id;
  if (!isIdentifier(sub)) return undefined;
  if (typeof iss === 'string' && iss !== '') return { iss, sub };
  // No issuer (none, null or ''): the subject alone. An issuer of another type (a number, an
  // object) would be dropped, and the same subject of two such issuers be one caller: none.
  return iss === undefined || iss === null || iss === '' ? sub : undefined;
}

function isIdentifier(value: unknown): value is string | number {
  return (
    (typeof value === 'string' && value !== '') ||
    (typeof value === 'number' && Number.isFinite(value))
  );
}

/** The default scope hook: the principal of `request.user` ({@link principalFromUser}). */
export function userScope(request: NestHttpRequest): ScopeHint {
  return { principal: principalFromUser(request.user) as JsonValue as ScopeHint['principal'] };
}
