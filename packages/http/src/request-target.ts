/** The two parts of a request URL the fingerprint and the default operation use. */
export interface RequestTarget {
  /** As `new URL(url, 'http://localhost').pathname` gives it. */
  pathname: string;
  /** As `new URL(url, 'http://localhost').search` gives it. */
  search: string;
}

/** Path characters the URL parser leaves as they are; no `.` (dot segments) and no `%` (`%2e`). */
const PLAIN_PATH = /^\/[A-Za-z0-9\-_~!$&'()*+,;=:@/]*$/;
/** Query characters the URL parser leaves as they are (not `'`, which it escapes for http). */
const PLAIN_QUERY = /^[A-Za-z0-9\-._~!$&()*+,;=:@/?%]*$/;
/** Origins (`http://host:port`) checked with the URL parser, and whether it took them. */
const origins = new Map<string, boolean>();
const MAX_ORIGINS = 64;

function originParses(origin: string): boolean {
  let ok = origins.get(origin);
  if (ok === undefined) {
    try {
      ok = new URL(`${origin}/`).pathname === '/';
    } catch {
      ok = false;
    }
    // A bounded memo: a server sees a handful of Host values; past that, parse each time.
    if (origins.size < MAX_ORIGINS) origins.set(origin, ok);
  }
  return ok;
}

/**
 * The path and query of a request URL (absolute, or path and query) exactly as
 * `new URL(url, 'http://localhost')` gives them, without making a `URL` for the usual
 * spellings: an `http(s)` origin the parser takes (checked once per origin) or none, a path
 * and a query of characters it leaves unchanged, no fragment. Anything else goes through
 * `URL`.
 * @throws TypeError for a URL the parser refuses (`http://a:99999/x`, `http://a%zz/x`):
 *   `begin` answers it with a 400 `invalid-target` problem
 */
export function requestTarget(url: string): RequestTarget {
  let start = -1;
  if (url.charCodeAt(0) === 47 /* / */) {
    if (url.charCodeAt(1) !== 47) start = 0;
  } else {
    const scheme = url.startsWith('http://') ? 7 : url.startsWith('https://') ? 8 : 0;
    if (scheme > 0) {
      const slash = url.indexOf('/', scheme);
      if (slash > scheme) {
        const origin = url.slice(0, slash);
        if (!/[\\?#]/.test(origin) && originParses(origin)) start = slash;
      }
    }
  }
  if (start >= 0 && !url.includes('#')) {
    const question = url.indexOf('?', start);
    const pathname = question < 0 ? url.slice(start) : url.slice(start, question);
    const query = question < 0 ? '' : url.slice(question + 1);
    if (PLAIN_PATH.test(pathname) && PLAIN_QUERY.test(query))
      return { pathname, search: query === '' ? '' : `?${query}` };
  }
  const parsed = new URL(url, 'http://localhost');
  return { pathname: parsed.pathname, search: parsed.search };
}
