export { headersOf, recordServerResponse, sendWebResponse } from './node-response.js';
