import type { RequestBody } from '@idem/http';
import type { Context } from 'hono';

/** The part of Hono's `HonoRequest` this module uses (public members). */
interface HonoRequestLike {
  bodyCache: Record<string, Promise<unknown> | undefined>;
  text(): Promise<string>;
  json(): Promise<unknown>;
  arrayBuffer(): Promise<ArrayBuffer>;
  blob(): Promise<Blob>;
}
type HonoRequestClass = new (request: Request) => HonoRequestLike;

/** Per `HonoRequest` class: whether it serves a `text` put in its `bodyCache` (see {@link probe}). */
const verdicts = new WeakMap<object, boolean>();
const probing = new WeakSet<object>();
const decoder = new TextDecoder();

/**
 * Hands the JSON body the middleware read for the fingerprint to Hono's body cache
 * (`c.req.bodyCache`, where Hono keeps what `c.req.json()`, `text()`... read, and where its
 * own validator puts a form it parsed), as the `text` that `c.req.text()` would have decoded.
 * The handler's `c.req.json()` then parses it instead of making a Web `Request` over the
 * Node request to read it again (with @hono/node-server 1.x, a `Request` with an
 * `AbortSignal`, more CPU than the rest of a first execution).
 *
 * Only when nothing is cached yet, for a body that was valid UTF-8 JSON without a byte order
 * mark (so `c.req.arrayBuffer()`, rebuilt by Hono from that text, is the same bytes), and
 * only once a probe showed that this Hono's request gives every reader (`text`, `json`,
 * `arrayBuffer`, `blob` with the request's media type) from a cached `text` as the request
 * itself would (older Hono releases rebuild a `blob()` from the cache without the media
 * type: nothing is offered there). `c.req.raw` is left unread: read directly, even after
 * `c.req.json()`, it gives the same bytes.
 */
export function offerBodyToHono(c: Context, body: RequestBody): void {
  if (body.kind !== 'json' || body.bytes === undefined) return;
  const bytes = body.bytes;
  if (bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf) return;
  if (!honoServesCachedText(c)) return;
  const cache = c.req.bodyCache as HonoRequestLike['bodyCache'];
  if (Object.keys(cache).length > 0) return;
  cache.text = Promise.resolve(decoder.decode(bytes));
}

function honoServesCachedText(c: Context): boolean {
  const type = c.req.constructor as HonoRequestClass;
  const verdict = verdicts.get(type);
  if (verdict !== undefined) return verdict;
  if (!probing.has(type)) {
    probing.add(type);
    probe(type).then(
      (served) => verdicts.set(type, served),
      () => verdicts.set(type, false),
    );
  }
  return false;
}

/**
 * Whether `HonoRequest` (the class of `c.req`) answers each of its body readers from a `text`
 * in its `bodyCache` exactly as from the request (same value, same bytes, a `Blob` of the
 * request's media type), without reading the request. Run once per class, on a request of
 * its own; until it has answered, nothing is offered.
 */
async function probe(HonoRequest: HonoRequestClass): Promise<boolean> {
  const cached = '{"probe":"cached \u00e9"}';
  const request = () =>
    new Request('http://probe.invalid/', {
      method: 'POST',
      headers: { 'content-type': 'application/json; charset=UTF-8' },
      body: '{"probe":"sent"}',
    });
  const own = await request().blob();
  const served = async (read: (hono: HonoRequestLike) => Promise<boolean>) => {
    const raw = request();
    const hono = new HonoRequest(raw);
    hono.bodyCache.text = Promise.resolve(cached);
    return (await read(hono)) && !raw.bodyUsed;
  };
  const checks = await Promise.all([
    served(async (hono) => (await hono.text()) === cached),
    served(async (hono) => JSON.stringify(await hono.json()) === cached),
    served(async (hono) => decoder.decode(await hono.arrayBuffer()) === cached),
    served(async (hono) => {
      const blob = await hono.blob();
      return blob.type === own.type && (await blob.text()) === cached;
    }),
  ]);
  return checks.every(Boolean);
}
