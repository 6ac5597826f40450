export { headersOf, headerValue, recordServerResponse, sendWebResponse } from './node-response.js';
