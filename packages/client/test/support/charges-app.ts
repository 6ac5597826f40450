import { randomUUID } from 'node:crypto';

/**
 * The application behind the idempotency layer: "charges" a JSON body and counts every
 * execution, so tests can check that a logical call ran once whatever the faults.
 * Body fields steer it: `delayMs` makes it slow, `status` makes it answer with that status.
 */
export interface ChargesApp {
  handler: (request: Request) => Promise<Response>;
  /** Executions per `item` field of the body (or per raw body when it has none). */
  executions: Map<string, number>;
  /** Total executions. */
  total(): number;
  /** Executions still running. */
  inFlight(): number;
}

export function createChargesApp(): ChargesApp {
  const executions = new Map<string, number>();
  let running = 0;
  const handler = async (request: Request): Promise<Response> => {
    const text = await request.text();
    let body: { item?: unknown; delayMs?: number; status?: number } = {};
    try {
      body = JSON.parse(text) as typeof body;
    } catch {
      // not JSON: counted by raw text
    }
    const id = body.item === undefined ? text : String(body.item);
    executions.set(id, (executions.get(id) ?? 0) + 1);
    running++;
    try {
      if (body.delayMs) await new Promise((r) => setTimeout(r, body.delayMs));
      const status = body.status ?? 201;
      return new Response(
        JSON.stringify({ charge: randomUUID(), item: body.item ?? null, bytes: text.length }),
        { status, headers: { 'content-type': 'application/json' } },
      );
    } finally {
      running--;
    }
  };
  return {
    handler,
    executions,
    total: () => [...executions.values()].reduce((a, b) => a + b, 0),
    inFlight: () => running,
  };
}
