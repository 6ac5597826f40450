import { createServer, request } from 'node:http';
import { listening, type RunningApp } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import { afterEach, describe, expect, it } from 'vitest';
import { createIdempotencyHandler } from '../src/index.js';
import { recordServerResponse, requestUrl, sendDecisionResponse } from '../src/node.js';

// The Node recorder stripped the whitespace at both ends of a response header value with
// `/^[\t\n\r ]+|[\t\n\r ]+$/g`, which backtracks over every run of whitespace not at the end:
// 64 K spaces between two characters took about 2 s of CPU, 300 K about 40 s, holding the
// event loop. Now loops; a value with edge whitespace is recorded stripped, as before.

const apps: RunningApp[] = [];
afterEach(async () => {
  await Promise.all(apps.splice(0).map((app) => app.close()));
});

const inner = ' '.repeat(300_000);
const value = ` a${inner}b `;

function get(url: string): Promise<{ status: number; disposition: string | undefined }> {
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      { method: 'POST', headers: { 'idempotency-key': 'k' }, maxHeaderSize: 1 << 20 },
      (res) => {
        res.resume();
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            disposition: res.headers['content-disposition'] as string | undefined,
          }),
        );
      },
    );
    req.on('error', reject);
    req.end();
  });
}

describe('a response header value with a long run of inner whitespace', () => {
  it('is recorded in linear time and replayed stripped', async () => {
    const idem = createIdempotencyHandler({
      store: createMemoryStore(),
      scope: 'global',
      onWarning: () => {},
    });
    let runs = 0;
    let recordCpuMs = 0;
    const server = createServer(async (req, res) => {
      const decision = await idem.begin({
        native: req as unknown as Request,
        method: req.method ?? 'POST',
        url: requestUrl(req.url ?? '/'),
        header: (name) => (name === 'idempotency-key' ? 'k' : undefined),
        readBody: async () => ({ kind: 'none' }),
      });
      if (decision.action === 'respond') return sendDecisionResponse(res, decision);
      if (decision.action !== 'execute') throw new Error(decision.action);
      runs++;
      recordServerResponse(res, decision.recorder);
      res.setHeader('content-disposition', value);
      const started = process.cpuUsage();
      res.end('{}');
      const used = process.cpuUsage(started);
      recordCpuMs = (used.user + used.system) / 1000;
    });
    server.listen(0, '127.0.0.1');
    const running = await listening(server);
    apps.push(running);
    const first = await get(running.url);
    expect(first.status).toBe(200);
    expect(runs).toBe(1);
    // Linear: milliseconds; the expression took tens of seconds here.
    expect(recordCpuMs).toBeLessThan(3_000);
    expect(first.disposition?.length).toBeGreaterThan(inner.length);
    const replay = await get(running.url);
    expect(replay.status).toBe(200);
    expect(runs).toBe(1);
    expect(replay.disposition).toBe(value.trim());
  }, 60_000);
});
