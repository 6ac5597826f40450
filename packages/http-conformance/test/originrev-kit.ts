/**
 * originrev (adversarial review of the origin guarantee): what each framework adapter's test
 * checks of `originId` in its handler context. The handler pushes the `originId` it reads to
 * `seen` and answers `{ originId }` with {@link originrevStatus}; `post` sends one request
 * with an `Idempotency-Key`. A first attempt fails (503: not final, the key is released), its
 * retry succeeds (201), a third is replayed, another key runs once: one logical request, one
 * originId (32 hex characters), another key another.
 */
import { expect } from 'vitest';

export interface OriginrevAnswer {
  status: number;
  replayed: boolean;
  body: unknown;
}

/** The status the handler answers: 503 the first time, 201 after. */
export const originrevStatus = (seen: readonly string[]): number => (seen.length === 1 ? 503 : 201);

export async function expectOneOriginIdPerRequest(
  post: (key: string) => Promise<OriginrevAnswer>,
  seen: readonly string[],
): Promise<void> {
  expect((await post('k1')).status).toBe(503);
  expect((await post('k1')).status).toBe(201);
  const replay = await post('k1');
  expect(replay.replayed).toBe(true);
  await post('k2');
  expect(seen).toHaveLength(3);
  expect(seen[0]).toMatch(/^[0-9a-f]{32}$/);
  expect(seen[1]).toBe(seen[0]);
  expect(seen[2]).not.toBe(seen[0]);
  expect(replay.body).toEqual({ originId: seen[0] });
}

/** {@link OriginrevAnswer} of an exchange of http-conformance's `send` (a JSON body). */
export const originrevAnswerOf = (exchange: {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}): OriginrevAnswer => ({
  status: exchange.status,
  replayed: exchange.headers['idempotent-replayed'] === 'true',
  body: JSON.parse(exchange.body.toString()),
});
