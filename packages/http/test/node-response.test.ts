import { send } from '@idem/http-conformance';
import { afterEach, describe, expect, it } from 'vitest';
import { REPLAYED_HEADER } from '../src/index.js';
import { closeRecordedServers, serveRecorded as serve } from './support/recorded-server.js';

// recordServerResponse on a plain node:http server, driven by apps that misuse the response
// the way real apps do. Whatever the app does, the first caller and every replay see the
// same bytes, and the key is settled.

afterEach(closeRecordedServers);

describe('recordServerResponse with apps that misuse the response', () => {
  it('a write after end does not reach the first caller ahead of the body: it sees what replays see', async () => {
    let runs = 0;
    const errors: string[] = [];
    const url = await serve((_req, res) => {
      runs++;
      res.on('error', (error) => errors.push((error as NodeJS.ErrnoException).code ?? ''));
      res.end('the body');
      res.write('late');
    });
    const first = await send(url, '/w', { key: 'write-after-end', body: {} });
    const replay = await send(url, '/w', { key: 'write-after-end', body: {} });
    expect(first.body.toString()).toBe('the body');
    expect(replay.headers[REPLAYED_HEADER]).toBe('true');
    expect(replay.body.equals(first.body)).toBe(true);
    expect(runs).toBe(1);
    // As without the recorder: Node refuses a write after end.
    expect(errors).toEqual(['ERR_STREAM_WRITE_AFTER_END']);
  });

  it('an outcome policy that throws records the response (the handler runs once, a retry replays), and the error is reported (no hung response)', async () => {
    let runs = 0;
    const warnings: string[] = [];
    const url = await serve(
      (_req, res) => {
        runs++;
        res.setHeader('x-bad', '1');
        res.setHeader('content-type', 'text/plain');
        res.end('fine');
      },
      {
        isFinal: (head) => {
          if (head.headers.get('x-bad')) throw new Error('policy bug');
          return true;
        },
        onWarning: (message) => warnings.push(message),
      },
    );
    // The app's response reaches its client as the app wrote it.
    const first = await send(url, '/p', { key: 'policy-throws', body: {}, timeoutMs: 2_000 });
    expect(first.status).toBe(200);
    expect(first.body.toString()).toBe('fine');
    expect(first.headers[REPLAYED_HEADER]).toBeUndefined();
    const again = await send(url, '/p', { key: 'policy-throws', body: {}, timeoutMs: 2_000 });
    expect(again.status).toBe(200);
    expect(again.body.toString()).toBe('fine');
    expect(again.headers[REPLAYED_HEADER]).toBe('true');
    expect(runs).toBe(1); // recorded, never released: the retry is a replay
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain('isFinal');
    expect(warnings[0]).toContain('Error: policy bug');
  });

  it('an outcome policy that throws on a writeHead response with a declared length records it too', async () => {
    let runs = 0;
    const warnings: string[] = [];
    const url = await serve(
      (_req, res) => {
        runs++;
        res.writeHead(202, { 'content-type': 'text/plain', 'content-length': '8' });
        res.write('acc');
        res.end('epted');
      },
      {
        isFinal: () => {
          throw new TypeError('policy bug');
        },
        onWarning: (message) => warnings.push(message),
      },
    );
    const first = await send(url, '/h', { key: 'policy-throws-head', body: {}, timeoutMs: 2_000 });
    expect(first.status).toBe(202);
    expect(first.body.toString()).toBe('accepted');
    const again = await send(url, '/h', { key: 'policy-throws-head', body: {}, timeoutMs: 2_000 });
    expect(again.status).toBe(202);
    expect(again.body.toString()).toBe('accepted');
    expect(again.headers[REPLAYED_HEADER]).toBe('true');
    expect(runs).toBe(1);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain('TypeError: policy bug');
  });

  it('a status a Web Response cannot carry (999) is not recorded under a policy that records everything', async () => {
    let runs = 0;
    const url = await serve(
      (_req, res) => {
        runs++;
        res.statusCode = 999;
        res.end('custom status');
      },
      { isFinal: () => true },
    );
    const first = await send(url, '/s', { key: 'status-999', body: {} });
    expect(first.status).toBe(999);
    // Recorded, every retry would get a 500 for the key's retention (the replay cannot be built).
    const again = await send(url, '/s', { key: 'status-999', body: {} });
    expect(again.status).toBe(999);
    expect(again.headers[REPLAYED_HEADER]).toBeUndefined();
    expect(runs).toBe(2);
  });
});
