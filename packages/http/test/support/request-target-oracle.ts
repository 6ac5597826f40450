import { requestTarget } from '../../src/request-target.js';

/** A target's path and query as the URL parser gives them, or 'throws' where it refuses. */
export function viaUrl(url: string): { pathname: string; search: string } | 'throws' {
  try {
    const parsed = new URL(url, 'http://localhost');
    return { pathname: parsed.pathname, search: parsed.search };
  } catch {
    return 'throws';
  }
}

/** What `requestTarget` gives (compared whole with {@link viaUrl}), or 'throws'. */
export function viaTarget(url: string): { pathname: string; search: string } | 'throws' {
  try {
    return requestTarget(url);
  } catch {
    return 'throws';
  }
}
