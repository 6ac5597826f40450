/** What an outcome policy sees of a response: its status and headers, before the body. */
export interface ResponseHead {
  status: number;
  headers: Headers;
}

/**
 * Decides whether a response is final (recorded and replayed to every retry) or released
 * so that a retry executes again. A handler that throws is seen as a 500 response. It is
 * not asked about a status outside 200..599 (one a Web `Response` cannot carry, so no replay
 * could be built): such a response is never final.
 */
export type ResponsePolicy = (response: ResponseHead) => boolean;

/** Default policy: only 2xx responses are final; errors are released for a retry. */
export const finalOn2xx: ResponsePolicy = (response) =>
  response.status >= 200 && response.status < 300;

/**
 * Stripe's policy: once the handler started, every response it gives is final, 4xx and 5xx
 * included (a throw is recorded as a 500 problem). @idem/http's own 400/409/413/422/503
 * answers come before the handler starts and are never recorded.
 */
export const finalOnceStarted: ResponsePolicy = () => true;
