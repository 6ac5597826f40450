import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import { type Attempt, probeRecovery, streamedAnswer } from '../src/driver.js';

const chunk = (content: string) =>
  `data: ${JSON.stringify({ object: 'chat.completion.chunk', choices: [{ index: 0, delta: { content } }] })}\n\n`;

describe('streamedAnswer', () => {
  it('reads a whole stream as the content the verdict judges, keep-alive comments ignored', () => {
    const text = `${chunk('answer to x, ')}: keep-alive\n\n${chunk('nonce 1.')}data: [DONE]\n\n`;
    expect(streamedAnswer(text)).toBe(JSON.stringify({ content: 'answer to x, nonce 1.' }));
  });

  it('takes a stream cut before [DONE] for no answer (the client retries)', () => {
    expect(streamedAnswer(`${chunk('answer to x, ')}`)).toBeUndefined();
  });
});

describe('probeRecovery', () => {
  /**
   * A server answering keyed requests 201 at once and /readyz 503 until `readyAfterMs` has
   * passed and it has said 503 twice (so a prober slowed by a loaded machine still sees it).
   */
  async function server(readyAfterMs: number) {
    const started = Date.now();
    let notReady = 0;
    const s = createServer((req, res) => {
      req.resume();
      req.on('end', () => {
        if (req.url === '/readyz') {
          const ready = Date.now() - started >= readyAfterMs && notReady >= 2;
          if (!ready) notReady++;
          res.statusCode = ready ? 200 : 503;
          res.end('{}');
          return;
        }
        res.statusCode = 201;
        res.setHeader('content-type', 'application/json');
        res.end(JSON.stringify({ content: 'x' }));
      });
    });
    await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
    const { port } = s.address() as AddressInfo;
    return { url: `http://127.0.0.1:${port}`, started, close: () => s.close() };
  }

  it('waits for readiness too: a target that serves requests but says not ready has not recovered', async () => {
    const s = await server(400);
    const attempts: Attempt[] = [];
    try {
      // Each probe may take up to 3 s (was 1 s: on a loaded CI machine the server's 503s came
      // after it and were recorded as timeouts, so no 503 was seen).
      const ms = await probeRecovery({
        tag: 't',
        targets: [s.url],
        since: s.started,
        maxMs: 8_000,
        attemptTimeoutMs: 3_000,
        attempts,
      });
      expect(ms).toBeGreaterThanOrEqual(400);
      // Probes every 100 ms: ready within a few of them, not at the 8 s limit.
      expect(ms).toBeLessThan(7_000);
      expect(attempts.some((a) => a.client === -3 && a.status === 503)).toBe(true);
      expect(attempts.some((a) => a.client === -3 && a.status === 200)).toBe(true);
    } finally {
      s.close();
    }
  });

  /**
   * A server ready at once whose keyed requests are refused 503 until `refuseForMs` after it
   * started, then answered 201 after `keyedMs` (one request's own time).
   */
  async function slowServer(keyedMs: number, refuseForMs: number) {
    const started = Date.now();
    const s = createServer((req, res) => {
      req.resume();
      req.on('end', () => {
        if (req.url === '/readyz') {
          res.end('{}');
          return;
        }
        if (Date.now() - started < refuseForMs) {
          res.statusCode = 503;
          res.end('{}');
          return;
        }
        setTimeout(() => {
          res.statusCode = 201;
          res.setHeader('content-type', 'application/json');
          res.end(JSON.stringify({ content: 'x' }));
        }, keyedMs);
      });
    });
    await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
    const { port } = s.address() as AddressInfo;
    return { url: `http://127.0.0.1:${port}`, started, close: () => s.close() };
  }

  /** Recovery of `s` from its start, with `warmMs` as one request's own time before the fault. */
  const probeWithWarm = (
    s: { url: string; started: number },
    warmMs: number,
    attempts: Attempt[],
  ) =>
    probeRecovery({
      tag: 't',
      targets: [s.url],
      since: s.started,
      warmKeyedMs: new Map([[s.url, warmMs]]),
      maxMs: 8_000,
      attemptTimeoutMs: 5_000,
      attempts,
    });

  it("takes one request's own time before the fault out of the keyed probe's time, and no more", async () => {
    const s = await slowServer(600, 0);
    const attempts: Attempt[] = [];
    try {
      const ms = await probeWithWarm(s, 600, attempts);
      const ok = attempts.find((a) => a.client === -1 && a.status === 201);
      if (ms === undefined || ok === undefined) throw new Error('no 2xx');
      const answeredAfter = ok.startedAt + ok.latencyMs - s.started;
      expect(answeredAfter).toBeGreaterThanOrEqual(600);
      // The 600 ms are taken out (readiness answered at once), and only those.
      expect(ms).toBeLessThan(answeredAfter);
      expect(ms).toBeGreaterThanOrEqual(answeredAfter - 600);
    } finally {
      s.close();
    }
  });

  it('still counts an app that refuses requests after the fault ended: only the warm time is taken out', async () => {
    // What a backoff or a circuit kept after the store is back looks like: 503 for 1.5 s.
    const s = await slowServer(300, 1_500);
    try {
      const ms = await probeWithWarm(s, 300, []);
      expect(ms).toBeGreaterThanOrEqual(1_500);
    } finally {
      s.close();
    }
  });

  it('never recovered when readiness never comes back', async () => {
    const s = await server(60_000);
    try {
      const ms = await probeRecovery({
        tag: 't',
        targets: [s.url],
        since: Date.now(),
        maxMs: 500,
        attemptTimeoutMs: 1_000,
        attempts: [],
      });
      expect(ms).toBeUndefined();
    } finally {
      s.close();
    }
  });
});
