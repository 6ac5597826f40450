import type { IncomingHttpHeaders, ServerResponse } from 'node:http';

export type { RecordServerResponseOptions } from './node-response.js';
export { headersOf, recordServerResponse } from './node-response.js';

/** Writes a Web `Response` (a replay or a problem) to a Node response, chunk by chunk. */
export async function sendWebResponse(res: ServerResponse, response: Response): Promise<void> {
  res.statusCode = response.status;
  for (const [name, value] of response.headers) res.setHeader(name, value);
  if (response.body === null) {
    res.end();
    return;
  }
  const reader = response.body.getReader();
  try {
    for (let read = await reader.read(); !read.done; read = await reader.read())
      res.write(read.value);
    res.end();
  } catch (error) {
    res.destroy(error instanceof Error ? error : new Error(String(error)));
  }
}

/** One header of a Node request as a single string (repeated fields joined by ", "). */
export function headerValue(headers: IncomingHttpHeaders, name: string): string | undefined {
  const value = headers[name.toLowerCase()];
  return Array.isArray(value) ? value.join(', ') : value;
}

/**
 * A Node request's target (`req.url`: path and query as sent) as an absolute URL, for
 * `IncomingRequest.url`. Read relative to a base, a target that starts with `//` would
 * name a host (`//a/payouts` is path `/payouts` on host `a`): a prefix keeps it a path.
 */
export function requestUrl(target: string): string {
  return target.startsWith('/') ? `http://localhost${target}` : target;
}
