import { afterAll, beforeAll, describe, expect, it } from 'vitest';

/**
 * An app for {@link describeReasonPhrase}, listening on loopback: `POST /made` answers 201
 * with the reason phrase `Made here`, `POST /usual` 201 with none set (Node's `Created`),
 * and any further case's route as that case says; each counts the runs of its handler.
 */
export interface ReasonPhraseApp {
  /** Base URL, `http://127.0.0.1:port`. */
  url: string;
  /** Handler runs so far, all routes together. */
  runs(): number;
  close(): unknown;
}

/** A route of {@link describeReasonPhrase}: path, status and the reason phrase it answers with. */
export type ReasonPhraseCase = readonly [path: string, status: number, phrase: string];

const CASES: readonly ReasonPhraseCase[] = [
  ['/made', 201, 'Made here'],
  ['/usual', 201, 'Created'],
];

/**
 * Registers tests that a replay's status line is the first response's, reason phrase
 * included (HTTP/1.1), for a Node adapter: each case's route is called twice under one key;
 * the first runs the handler, the second is a replay with the same status, phrase and body.
 */
export function describeReasonPhrase(
  name: string,
  start: () => Promise<ReasonPhraseApp>,
  more: readonly ReasonPhraseCase[] = [],
): void {
  describe(`${name}: the reason phrase of a replay`, () => {
    let app: ReasonPhraseApp;
    beforeAll(async () => {
      app = await start();
    });
    afterAll(() => app.close());

    const post = async (path: string, key: string) => {
      const response = await fetch(`${app.url}${path}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'idempotency-key': key },
        body: '{"a":1}',
      });
      return {
        line: [response.status, response.statusText],
        replayed: response.headers.get('idempotent-replayed') === 'true',
        body: await response.text(),
      };
    };

    for (const [path, status, phrase] of [...CASES, ...more]) {
      it(`${path}: the replay has the first response's status line and body`, async () => {
        const before = app.runs();
        const first = await post(path, `reason${path}`);
        const replay = await post(path, `reason${path}`);
        expect([first.line, first.replayed]).toEqual([[status, phrase], false]);
        expect([replay.line, replay.replayed]).toEqual([[status, phrase], true]);
        expect(replay.body).toBe(first.body);
        expect(app.runs()).toBe(before + 1);
      });
    }
  });
}
