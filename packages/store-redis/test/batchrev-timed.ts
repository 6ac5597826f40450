/** One call of the batchrev reviews, bounded: how it ended and after how long ('HUNG' past `boundMs`). */
export interface Outcome {
  key: string;
  ok: boolean;
  replayed?: boolean;
  value?: unknown;
  error?: string;
  ms: number;
}

export async function timed(
  key: string,
  boundMs: number,
  call: () => Promise<{ value: unknown; replayed: boolean }>,
): Promise<Outcome> {
  const started = Date.now();
  let timer: NodeJS.Timeout | undefined;
  const hung = new Promise<Outcome>((resolve) => {
    timer = setTimeout(
      () => resolve({ key, ok: false, error: 'HUNG', ms: Date.now() - started }),
      boundMs,
    );
  });
  const run = call().then(
    (r) => ({ key, ok: true, replayed: r.replayed, value: r.value, ms: Date.now() - started }),
    (e: unknown) => ({ key, ok: false, error: (e as Error).name, ms: Date.now() - started }),
  );
  const result = await Promise.race([run, hung]);
  clearTimeout(timer);
  return result;
}
