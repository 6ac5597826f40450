import type { ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { serve } from '@hono/node-server';
import { createApp } from './app.js';
import { openBackend } from './backend.js';
import type { Config } from './config.js';
import { createLocalModel } from './model/local-model.js';
import type { ChatModel } from './model/model.js';
import { createUpstreamModel } from './model/upstream-model.js';

/** A running server. */
export interface RunningServer {
  /** Base URL, e.g. `http://127.0.0.1:3000`. */
  url: string;
  port: number;
  /**
   * Graceful stop: new requests get 503, in-flight ones finish and record their outcomes
   * (up to `shutdownTimeoutMs`), then connections and the store client are closed.
   * Resolves `true` when everything finished in time.
   */
  close(): Promise<boolean>;
}

/** Builds the model a configuration asks for. */
export function modelFor(config: Config): ChatModel {
  return config.model.kind === 'local'
    ? createLocalModel({ chunkDelayMs: config.model.chunkDelayMs })
    : createUpstreamModel({
        url: config.model.url,
        apiKey: config.model.apiKey,
        timeoutMs: config.model.timeoutMs,
      });
}

/** Opens the store, starts listening, and returns once the server accepts connections. */
export async function startServer(config: Config): Promise<RunningServer> {
  const backend = await openBackend(config.store, config.keyPrefix, {
    timeoutMs: config.storeTimeoutMs,
  });
  const { app, inFlight, beginShutdown, drain } = createApp({
    backend,
    model: modelFor(config),
    leaseMs: config.leaseMs,
    storeTimeoutMs: config.storeTimeoutMs,
    otel: config.otel,
  });
  let server: ReturnType<typeof serve>;
  try {
    server = await new Promise<ReturnType<typeof serve>>((resolve, reject) => {
      const s = serve({ fetch: app.fetch, hostname: config.host, port: config.port }, () =>
        resolve(s),
      );
      s.once('error', reject);
    });
  } catch (error) {
    await backend.close();
    throw error;
  }
  // Shutdown also waits for every response to be written out: the app's own tracking ends
  // when the outcome is recorded, which can be before the last bytes left the socket.
  server.on('request', (_request, response: ServerResponse) => {
    inFlight.track(new Promise((resolve) => response.once('close', resolve)));
  });
  const address = server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  let closing: Promise<boolean> | undefined;

  async function shutdown(): Promise<boolean> {
    // A bill retrying through a store outage gives up a store timeout before the drain
    // ends, so its request still gets its 503 before the connections are closed.
    beginShutdown(config.shutdownTimeoutMs - config.storeTimeoutMs);
    const stopped = new Promise<void>((resolve) => server.close(() => resolve()));
    const startedAt = Date.now();
    const finished = await inFlight.idle(config.shutdownTimeoutMs);
    if ('closeAllConnections' in server) server.closeAllConnections();
    await stopped;
    // Final writes still retrying after a store failure land before the store client closes
    // (within what is left of the shutdown budget); one left behind is the key's lease.
    const left = await drain(Math.max(1, config.shutdownTimeoutMs - (Date.now() - startedAt)));
    if (left > 0)
      console.warn(`llm-api: warning: ${left} final writes did not land before shutdown`);
    await backend.close();
    return finished && left === 0;
  }

  return {
    url: `http://${host}:${address.port}`,
    port: address.port,
    close: () => {
      closing ??= shutdown();
      return closing;
    },
  };
}
