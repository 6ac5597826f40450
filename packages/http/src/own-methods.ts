import { IncomingMessage, ServerResponse } from 'node:http';
import { Http2ServerRequest, Http2ServerResponse } from 'node:http2';
import { types } from 'node:util';

const SPARE = Symbol('idem.spare');

/**
 * Whether this V8 copies the hidden class of a detached object (see below) for each property
 * added to it: measured on V8 11.3 and 12.4 (Node 20 and 22), not on 13.6 (Node 24), where
 * such additions follow cached transitions again and a dictionary would only cost.
 */
const V8_MAJOR = Number((globalThis.process?.versions?.v8 ?? '').split('.')[0]);
const COPIES_DETACHED_CLASSES = V8_MAJOR > 0 && V8_MAJOR < 13;

/**
 * The prototypes Node's servers make their requests and responses with. An object that still
 * has one of them was not given another (Express's `setPrototypeOf`), so it is in the
 * transition tree, where readying it would only cost (Fastify's, Koa's, a plain server's).
 */
const NODE_PROTOTYPES: ReadonlySet<object> = new Set([
  IncomingMessage.prototype,
  ServerResponse.prototype,
  Http2ServerRequest.prototype,
  Http2ServerResponse.prototype,
]);

/**
 * Readies `object` for own properties added one by one on every request, at the cost of one.
 * Express gives each request and response its app's prototype (`Object.setPrototypeOf`),
 * which takes the object's hidden class out of V8's transition tree: from then on, every
 * property added to it copies its hidden class (about 3 µs each, and garbage), so the
 * response's five replaced methods and the request's `emit` cost more than the rest of the
 * recording, and the body parser's and the router's properties after them as much again.
 * A property deleted turns such an object's properties into a dictionary, where the next ones
 * are added cheaply (one hidden class shared by such objects after that).
 *
 * `existing` names an own property the object surely has (Express's `req.res`, `res.req`):
 * deleted and defined again with the same descriptor, that costs no copy of the class at all.
 * Without it (or when it is not such a property), a property of ours is added and deleted
 * again: on an object still in the transition tree (a plain Node server's) that only takes a
 * cached transition and goes back to the class it had. Nothing observable changes (but the
 * place of `existing` among the object's keys). Does nothing on a V8 that does not copy
 * (Node 24), nor to an object that still has the prototype Node made it with (see
 * `NODE_PROTOTYPES`).
 *
 * Done only where it is safe: on an extensible object that is no Proxy, and `existing` only
 * when it is an own data property, writable, enumerable and configurable (as an assignment
 * makes it); defined again (never assigned, which an accessor up the prototype chain, an
 * instrumentation's getter-only `res`, would take), then checked, and put back as it was on
 * any doubt. Never throws; never loses nor changes a value.
 */
export function readyForOwnMethods(object: object, existing?: string): void {
  if (!COPIES_DETACHED_CLASSES) return;
  const target = object as Record<PropertyKey, unknown>;
  try {
    // A Proxy's traps may refuse or answer otherwise than they do; frozen, sealed,
    // non-extensible: nothing can be added, there is nothing to gain.
    if (types.isProxy(target) || !Object.isExtensible(target)) return;
    if (NODE_PROTOTYPES.has(Object.getPrototypeOf(target))) return;
    if (existing !== undefined && redefine(target, existing)) return;
    addAndRemoveSpare(target);
  } catch {
    // An object that throws where it should answer: left as it is (see `redefine`).
  }
}

/**
 * Deletes `key`, an own plain data property of `target`, and defines it again as it was.
 * False, with nothing changed, when it is no such property or `target` refuses.
 */
function redefine(target: Record<PropertyKey, unknown>, key: string): boolean {
  const before = Object.getOwnPropertyDescriptor(target, key);
  if (
    before === undefined ||
    !('value' in before) ||
    !before.writable ||
    !before.enumerable ||
    !before.configurable
  ) {
    return false;
  }
  let ok = false;
  try {
    ok = Reflect.deleteProperty(target, key) && Reflect.defineProperty(target, key, before);
    ok = ok && sameData(Object.getOwnPropertyDescriptor(target, key), before);
  } catch {
    ok = false;
  }
  if (!ok) restore(target, key, before);
  return ok;
}

/** Whether `now` is the plain data property `before` describes, with the same value. */
function sameData(now: PropertyDescriptor | undefined, before: PropertyDescriptor): boolean {
  return (
    now !== undefined &&
    'value' in now &&
    Object.is(now.value, before.value) &&
    now.writable === before.writable &&
    now.enumerable === before.enumerable &&
    now.configurable === before.configurable
  );
}

/** Puts `key` back as `before` described it, as far as `target` lets it (never throws). */
function restore(target: Record<PropertyKey, unknown>, key: string, before: PropertyDescriptor) {
  try {
    if (sameData(Object.getOwnPropertyDescriptor(target, key), before)) return;
    if (Reflect.defineProperty(target, key, before)) return;
    target[key] = before.value;
  } catch {
    // Nothing more can be done: the object refuses (a Proxy's trap).
  }
}

/** Adds a property of ours and deletes it again (never throws, never leaves it). */
function addAndRemoveSpare(target: Record<PropertyKey, unknown>): void {
  try {
    target[SPARE] = undefined;
  } catch {
    // Refused (a Proxy's `set` trap): nothing was added.
  } finally {
    try {
      if (Object.getOwnPropertyDescriptor(target, SPARE) !== undefined) delete target[SPARE];
    } catch {
      // A Proxy's trap: nothing more to do.
    }
  }
}
