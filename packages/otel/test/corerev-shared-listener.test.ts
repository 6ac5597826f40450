// corerev: one listener shared by many stores' engines, a small maxOpenExecutions, holders of
// the same (storage key, fence) pairs begun and ended in random orders (seeded). Each holder
// begins under a root span of its own, so an execute span's trace names the holder it was
// opened for: its result must be that holder's, never another's (the pre-coreleft listener
// failed this in the first round), and no execute span is left open.
import { context, trace } from '@opentelemetry/api';
import { expect, it } from 'vitest';
import { ATTR, createOtelListener, SPAN } from '../src/index.js';
import { endEvent, missEvent } from './support/events.js';
import { countingOpen, telemetry } from './support/telemetry.js';

type Result = 'released' | 'completed';
type Span = ReturnType<ReturnType<typeof telemetry>['tracer']['startSpan']>;
interface Holder {
  storageKey: string;
  fence: number;
  root: Span;
  result: Result;
}

const operation = 'POST /pay';
const endOf = (h: Holder) => endEvent(h.storageKey, h.fence, operation, h.result);

it('random begins and ends of shared pairs: every execute span has the result of the holder it was opened for', async () => {
  for (let round = 0; round < 20; round++) {
    let seed = round + 1;
    const random = () => {
      seed = (seed * 1_103_515_245 + 12_345) & 0x7fffffff;
      return seed / 0x7fffffff;
    };
    const t = telemetry();
    const counted = countingOpen(t.tracer, SPAN.execute);
    const listener = createOtelListener({
      tracer: counted.tracer,
      metrics: false,
      maxOpenExecutions: 1 + Math.floor(random() * 4),
    });
    const open: Holder[] = [];
    const resultOf = new Map<string, Result>();
    const end = (h: Holder) => {
      listener(endOf(h));
      h.root.end();
      resultOf.set(h.root.spanContext().traceId, h.result);
    };
    for (let step = 0; step < 400; step++) {
      if (open.length === 0 || (random() < 0.55 && open.length < 30)) {
        const h: Holder = {
          storageKey: `k${Math.floor(random() * 3)}`,
          fence: 1 + Math.floor(random() * 2),
          root: t.tracer.startSpan('request'),
          result: random() < 0.5 ? 'released' : 'completed',
        };
        const miss = missEvent(h.storageKey, h.fence, operation);
        context.with(trace.setSpan(context.active(), h.root), () => listener(miss));
        open.push(h);
      } else {
        const [h] = open.splice(Math.floor(random() * open.length), 1);
        if (h) end(h);
      }
    }
    for (const h of open.splice(0)) end(h);
    const judged = t.spans(SPAN.execute).filter((s) => s.attributes[ATTR.result] !== undefined);
    expect(judged.length, `round ${round}`).toBeGreaterThan(0);
    for (const span of judged)
      expect(span.attributes[ATTR.result], `round ${round}`).toBe(
        resultOf.get(span.spanContext().traceId),
      );
    expect(counted.open(), `round ${round}`).toBe(0);
    await t.shutdown();
  }
});
