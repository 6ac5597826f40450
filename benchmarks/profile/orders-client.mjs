/**
 * The parent side of profile/http-serve.mjs, shared by the HTTP probes (http-ab.mjs,
 * lat-probe.mjs, strace-probe.mjs): starting a server child and the requests they send it.
 */
import { fork } from 'node:child_process';

const serveFile = new URL('./http-serve.mjs', import.meta.url).pathname;
const BODY = JSON.stringify({ sku: 'A-1', qty: 2 });

/** The HTTP suite's keyed `POST /orders`, as an autocannon request (also spread into fetch). */
export const request = (key) => ({
  method: 'POST',
  path: '/orders',
  headers: { 'content-type': 'application/json', 'idempotency-key': key },
  body: BODY,
});

/** The keys a replay run sends, each stored once by {@link prime}. */
export const replayKeys = Array.from({ length: 64 }, (_, i) => `replay-${i}`);

/**
 * Starts profile/http-serve.mjs for `framework` without middleware (`plain`) or with idem
 * from the built `packages` folder `root`; `execArgv` as fork's (the parent's when omitted).
 */
export async function startServer(framework, root, execArgv) {
  const child = fork(serveFile, [framework, root], {
    stdio: 'inherit',
    ...(execArgv ? { execArgv } : {}),
  });
  const { port, pid } = await new Promise((resolve) => child.once('message', resolve));
  return { child, pid, url: `http://127.0.0.1:${port}` };
}

/** Sends each of {@link replayKeys} once to the server at `url`, so that they replay after. */
export async function prime(url) {
  for (const key of replayKeys)
    await (await fetch(`${url}/orders`, { method: 'POST', ...request(key) })).text();
}
