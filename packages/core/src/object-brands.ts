/**
 * What an object thrown to the engine (a policy's error, a store's) is, for the copy that
 * carries `operationError` or `policyError` (see `copyOf` in idempotency.ts), told by brand
 * checks, never by `Symbol.toStringTag`, which any object may declare (the coreerr30
 * review: a class of the app's declaring one was thrown without the operation's error, a
 * `Map` subclass declaring `'Object'` got a broken copy, `{ [Symbol.toStringTag]: 'Error' }`
 * was copied as an `Error`). Portable: no import (core runs on Node, Bun, Deno and workerd).
 */

/** `Error.isError` (ES2026: Node 24, Deno 2.2, recent V8 and JavaScriptCore), where there is one. */
const errorIsError = (Error as { isError?: (value: unknown) => boolean }).isError;

/**
 * Whether `value` is a native error (`[[ErrorData]]`, as `new Error()` makes, in any realm):
 * by `Error.isError` where the runtime has it. Elsewhere (Node 20, 22) by its built-in tag when
 * it declares no `Symbol.toStringTag` (the tag is then the brand), and when it declares one,
 * by `instanceof Error` of this realm (no portable check of the slot is left).
 */
export function isNativeError(value: object): boolean {
  if (typeof errorIsError === 'function') return errorIsError(value);
  return Symbol.toStringTag in value
    ? value instanceof Error
    : Object.prototype.toString.call(value) === '[object Error]';
}

const ownGetter = (proto: object, key: string): ((this: unknown) => unknown) | undefined =>
  Object.getOwnPropertyDescriptor(proto, key)?.get;

/** The global `name` when the runtime has it (not every one has `SharedArrayBuffer`, `Temporal`...). */
function globalNamed(name: string): { prototype: Record<string, unknown> } | undefined {
  const value = (globalThis as Record<string, unknown>)[name];
  return typeof value === 'function'
    ? (value as unknown as { prototype: Record<string, unknown> })
    : undefined;
}

/** A method of the global class `name`'s prototype, when both exist. */
function methodOf(name: string, method: string): ((this: unknown) => unknown) | undefined {
  const found = globalNamed(name)?.prototype[method];
  return typeof found === 'function' ? (found as (this: unknown) => unknown) : undefined;
}

const unregister = methodOf('FinalizationRegistry', 'unregister');
const sharedBuffer = globalNamed('SharedArrayBuffer');

/**
 * Built-in methods that throw a `TypeError` on a receiver without their internal slot and
 * run no code of the object's (no getter, no trap of a proxy's): each one is a brand check
 * that holds for a subclass, another realm's object and one whose tag says otherwise.
 */
const BRAND_CHECKS: ((this: unknown) => unknown)[] = [
  Map.prototype.has,
  Set.prototype.has,
  WeakMap.prototype.has,
  WeakSet.prototype.has,
  Date.prototype.getTime,
  Boolean.prototype.valueOf,
  Number.prototype.valueOf,
  String.prototype.valueOf,
  Symbol.prototype.valueOf,
  BigInt.prototype.valueOf,
  ownGetter(RegExp.prototype, 'source'),
  ownGetter(ArrayBuffer.prototype, 'byteLength'),
  sharedBuffer && ownGetter(sharedBuffer.prototype, 'byteLength'),
  methodOf('WeakRef', 'deref'),
  unregister &&
    function (this: unknown) {
      // A fresh token: nothing was registered with it, so nothing is unregistered.
      return (unregister as (this: unknown, token: object) => unknown).call(this, {});
    },
].filter((check): check is (this: unknown) => unknown => typeof check === 'function');

/** Whether a brand check accepts `value`. */
function branded(value: object): boolean {
  for (const check of BRAND_CHECKS) {
    try {
      check.call(value);
      return true;
    } catch {}
  }
  return false;
}

// Intrinsic prototypes with state in internal slots and no check free of side effects (a
// Promise's methods attach reactions): recognised on the chain, in this realm.
const iteratorPrototype: object = Object.getPrototypeOf(
  Object.getPrototypeOf([][Symbol.iterator]()),
);
// %AsyncIteratorPrototype%: the prototype of the async generators' prototype.
const asyncIteratorPrototype: object = Object.getPrototypeOf(
  Object.getPrototypeOf(async function* () {}).prototype,
);
const INTRINSIC_PROTOTYPES = new Set<object>([
  Promise.prototype,
  iteratorPrototype,
  asyncIteratorPrototype,
]);

/**
 * Prototypes on whose chain an object is copied as what it is: `Object.prototype`, and the
 * native errors' (a proxy of an error, an object made on `Error.prototype`).
 */
const ORDINARY_PROTOTYPES = new Set<object>(
  [
    Object.prototype,
    Error.prototype,
    EvalError.prototype,
    RangeError.prototype,
    ReferenceError.prototype,
    SyntaxError.prototype,
    TypeError.prototype,
    URIError.prototype,
    globalNamed('AggregateError')?.prototype,
    globalNamed('SuppressedError')?.prototype,
  ].filter((proto): proto is object => proto !== undefined),
);

/** Where the runtime's classes are: the global object and its namespaces (`Intl.Collator`). */
const NAMESPACES: object[] = [
  globalThis,
  ...['Intl', 'WebAssembly', 'Temporal'].map(
    (name) => (globalThis as Record<string, unknown>)[name],
  ),
].filter((space): space is object => typeof space === 'object' && space !== null);

/**
 * Whether `ctor` is a class of the runtime's: the global (or `Intl.`, `WebAssembly.`...)
 * property of its name. A global defined by an accessor (Node defines `Response`, `Headers`
 * and others lazily) is taken for one by its name alone, without calling it: at worst an
 * object of the app's is thrown as it is, never copied broken.
 */
function isRuntimeClass(ctor: unknown): boolean {
  if (typeof ctor !== 'function') return false;
  const name = Object.getOwnPropertyDescriptor(ctor, 'name')?.value;
  if (typeof name !== 'string' || name === '') return false;
  for (const space of NAMESPACES) {
    const found = Object.getOwnPropertyDescriptor(space, name);
    if (found !== undefined && ('value' in found ? found.value === ctor : true)) return true;
  }
  return false;
}

/**
 * Whether `value` keeps state in internal slots that nothing copies (a built-in such as an
 * array, a `Map`, a `Date`, a `Promise`, or a host object such as a `URL` or a `Response`),
 * so that a copy of it would be broken: by brand checks, then by its prototype chain (an
 * intrinsic's prototype, or a runtime class's). Bounded: prototype chains are short.
 */
export function hasInternalState(value: object): boolean {
  if (Array.isArray(value) || ArrayBuffer.isView(value) || branded(value)) return true;
  // Declaring no tag, its built-in tag is exact: `Arguments` and the like (an error is told
  // before this is asked).
  if (!(Symbol.toStringTag in value) && Object.prototype.toString.call(value) !== '[object Object]')
    return true;
  let depth = 0;
  let last: object | undefined;
  for (
    let proto: object | null = Object.getPrototypeOf(value);
    proto !== null && depth < 64;
    proto = Object.getPrototypeOf(proto), depth++
  ) {
    if (ORDINARY_PROTOTYPES.has(proto)) return false;
    if (INTRINSIC_PROTOTYPES.has(proto)) return true;
    if (isRuntimeClass(Object.getOwnPropertyDescriptor(proto, 'constructor')?.value)) return true;
    last = proto;
  }
  // A chain that ends elsewhere than at this realm's `Object.prototype`: another realm's object
  // (a `vm` context's, an iframe's), whose intrinsics and classes are not this realm's. Its
  // tag is all there is to go by: one that declares a tag other than `'Object'` (a `Promise`,
  // a host object) is thrown as it is. An object without a prototype is an ordinary one.
  return last !== undefined && Object.prototype.toString.call(value) !== '[object Object]';
}
