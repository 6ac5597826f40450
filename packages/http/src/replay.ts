import { OutcomeCorruptError, type StoredOutcome } from '@idem/core';
import { OUTCOME_FORMAT } from './recorder.js';

/** Header that marks a replayed response. */
export const REPLAYED_HEADER = 'idempotent-replayed';

const NULL_BODY_STATUS = new Set([101, 103, 204, 205, 304]);

interface HttpOutcomeMeta {
  status: number;
  headers: [string, string][];
  chunks: number[];
}

function readMeta(outcome: StoredOutcome): HttpOutcomeMeta {
  const { meta } = outcome;
  const { status, headers, chunks } = meta as Partial<HttpOutcomeMeta>;
  const valid =
    meta.format === OUTCOME_FORMAT &&
    typeof status === 'number' &&
    Number.isInteger(status) &&
    status >= 200 &&
    status <= 599 &&
    Array.isArray(headers) &&
    headers.every(
      (h) => Array.isArray(h) && h.length === 2 && h.every((v) => typeof v === 'string'),
    ) &&
    Array.isArray(chunks) &&
    chunks.every((n) => Number.isSafeInteger(n) && n > 0) &&
    chunks.reduce((a, b) => a + b, 0) === outcome.body.length;
  if (!valid)
    throw new OutcomeCorruptError(
      'The stored outcome is not an HTTP response recorded by @idem/http',
    );
  return {
    status: status as number,
    headers: headers as [string, string][],
    chunks: chunks as number[],
  };
}

/**
 * Rebuilds the recorded response: the same status, the recorded headers plus
 * `Idempotent-Replayed: true`, and the same body bytes as a stream of the same chunks, in
 * the same order.
 * @throws OutcomeCorruptError when the outcome was not recorded by @idem/http
 */
export function replayResponse(outcome: StoredOutcome): Response {
  const meta = readMeta(outcome);
  const headers = new Headers(meta.headers);
  headers.set(REPLAYED_HEADER, 'true');
  if (NULL_BODY_STATUS.has(meta.status) || meta.chunks.length === 0) {
    return new Response(null, { status: meta.status, headers });
  }
  const body = outcome.body;
  let index = 0;
  let offset = 0;
  const stream = new ReadableStream<Uint8Array>(
    {
      pull(controller) {
        const length = meta.chunks[index++] as number;
        controller.enqueue(body.slice(offset, offset + length));
        offset += length;
        if (index === meta.chunks.length) controller.close();
      },
    },
    { highWaterMark: 0 },
  );
  return new Response(stream, { status: meta.status, headers });
}
