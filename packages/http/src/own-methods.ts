const SPARE = Symbol('idem.spare');

/**
 * Whether this V8 copies the hidden class of a detached object (see below) for each property
 * added to it: measured on V8 11.3 and 12.4 (Node 20 and 22), not on 13.6 (Node 24), where
 * such additions follow cached transitions again and a dictionary would only cost.
 */
const V8_MAJOR = Number((globalThis.process?.versions?.v8 ?? '').split('.')[0]);
const COPIES_DETACHED_CLASSES = V8_MAJOR > 0 && V8_MAJOR < 13;

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
 * deleted and set again to the same value (when it is a plain writable, enumerable,
 * configurable value, as an assignment makes it), that costs no copy of the class at all.
 * Without it (or when it is not such a property), a property of ours is added and deleted
 * again: on an object still in the transition tree (a plain Node server's) that only takes a
 * cached transition and goes back to the class it had. Nothing observable changes (but the
 * place of `existing` among the object's keys). Does nothing on a V8 that does not copy
 * (Node 24).
 */
export function readyForOwnMethods(object: object, existing?: string): void {
  if (!COPIES_DETACHED_CLASSES) return;
  const target = object as Record<PropertyKey, unknown>;
  if (existing !== undefined) {
    const descriptor = Object.getOwnPropertyDescriptor(target, existing);
    if (descriptor?.writable && descriptor.enumerable && descriptor.configurable) {
      delete target[existing];
      target[existing] = descriptor.value;
      return;
    }
  }
  target[SPARE] = undefined;
  delete target[SPARE];
}
