const SPARE = Symbol('idem.spare');
/**
 * Readies `object` for own properties added one by one on every request, at the cost of one.
 * Express gives each request and response its app's prototype (`Object.setPrototypeOf`),
 * which takes the object's hidden class out of V8's transition tree: from then on, every
 * property added to it copies its hidden class (about 3 µs each, and garbage), so the
 * response's five replaced methods and the request's `emit` cost more than the rest of the
 * recording. One property added and deleted again turns such an object's properties into a
 * dictionary, where the next ones are added cheaply (one hidden class shared by such objects
 * after that). An object still in the transition tree (a plain Node server's) only takes the
 * transition and goes back: its class, cached, is the one it had. Nothing observable changes.
 */
export function readyForOwnMethods(object: object): void {
  const target = object as Record<symbol, unknown>;
  target[SPARE] = undefined;
  delete target[SPARE];
}
