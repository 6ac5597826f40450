/**
 * One spelling for the paths that routers built on path-to-regexp with their defaults
 * (Express 5, `@koa/router`) send to the same route with the same parameters: they match
 * without regard to case and with an optional trailing slash, and percent-decode each
 * parameter. Merging more spellings than the router does is safe (the raw path stays in the
 * fingerprint, so a retry through another spelling gets 422); merging fewer would run a
 * route twice under one key. Dot segments and doubled slashes are left as they are: these
 * routers do not route `/x/../charges` or `//charges` to `/charges`.
 */
export function canonicalPath(path: string): string {
  // Usually nothing is escaped and nothing trails: no regular expression run.
  if (!path.includes('%')) {
    const lower = path.toLowerCase();
    if (lower.charCodeAt(lower.length - 1) !== 47 /* / */) return lower || '/';
    return trimTrailingSlashes(lower);
  }
  const decoded = path.replace(/%([0-9a-f]{2})/gi, (_escape, hex: string) =>
    // An encoded slash stays one: `a%2Fb` is one path segment, `a/b` two.
    hex.toLowerCase() === '2f' ? '%2f' : String.fromCharCode(Number.parseInt(hex, 16)),
  );
  return trimTrailingSlashes(decoded.toLowerCase());
}

/**
 * `path` without its trailing slashes, `/` when nothing is left. A loop from the end: the
 * expression `/\/+$/` backtracks over every run of slashes that is not at the end (a path of
 * 64k slashes and one letter, then a slash, cost seconds).
 */
function trimTrailingSlashes(path: string): string {
  let end = path.length;
  while (end > 0 && path.charCodeAt(end - 1) === 47 /* / */) end--;
  return end === 0 ? '/' : path.slice(0, end);
}

/** The path of a request target: origin form (`/path?query`) or absolute form (a proxy request). */
export function targetPath(target: string): string {
  if (target.startsWith('/')) {
    // Up to the first `?` or `#`.
    let end = target.indexOf('?');
    const hash = target.indexOf('#');
    if (hash !== -1 && (end === -1 || hash < end)) end = hash;
    return end === -1 ? target : target.slice(0, end);
  }
  try {
    return new URL(target).pathname;
  } catch {
    return target;
  }
}
