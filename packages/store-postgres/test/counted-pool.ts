import type pg from 'pg';

/**
 * Records the store operation of every statement sent through `pool` (from the prepared
 * statement's name, `idem_<operation>_<hash>`), or `sql` for anything else. Each entry is one
 * round trip: node-postgres sends one statement per `query` call.
 */
export function countStatements(pool: pg.Pool): { take(): string[] } {
  const sent: string[] = [];
  const original = pool.query.bind(pool) as (...args: unknown[]) => unknown;
  (pool as unknown as { query: (...args: unknown[]) => unknown }).query = (...args: unknown[]) => {
    const config = args[0] as { name?: string } | string;
    const name = typeof config === 'object' ? config.name : undefined;
    sent.push(name?.startsWith('idem_') ? name.split('_')[1]! : 'sql');
    return original(...args);
  };
  return {
    take() {
      const ops = [...sent];
      sent.length = 0;
      return ops;
    },
  };
}

/**
 * Records every statement sent on the connections `pool` opens from now on (the business
 * transaction's among them): a store step by its operation (from the prepared statement's
 * name), anything else as `label` names its text. Each entry is one round trip.
 */
/** What the renewal connection sends once when it opens (src/renewal-connection.ts). */
const RENEWAL_SESSION_SETUP = "SET default_transaction_isolation = 'read committed'";

export function traceConnections(pool: pg.Pool, label: (text: string) => string): string[] {
  const sent: string[] = [];
  pool.on('connect', (client) => {
    const original = client.query.bind(client) as (...args: unknown[]) => unknown;
    (client as unknown as { query: (...args: unknown[]) => unknown }).query = (...args) => {
      const config = args[0] as { name?: string; text?: string } | string;
      const text = typeof config === 'string' ? config : (config.text ?? '');
      // The renewal connection's session set-up, sent once when it opens (not a step).
      if (text === RENEWAL_SESSION_SETUP) return original(...args);
      sent.push(
        typeof config === 'object' && config.name ? config.name.split('_')[1]! : label(text),
      );
      return original(...args);
    };
  });
  return sent;
}
