/**
 * Entry of the upstream model's own process (see upstream-process.ts): argv[2] and argv[3]
 * are the chunks per answer and the pause between them. It reports `{ url }` once
 * listening, answers `{ op: 'counts' }` with every count, and exits on `{ op: 'close' }`.
 */

import { startUpstream } from './upstream.js';
import type { UpstreamCommand, WireCount } from './upstream-process.js';

if (!process.send) {
  console.error('upstream-child: expected an IPC channel');
  process.exit(2);
}
const upstream = await startUpstream({
  chunks: Number(process.argv[2]),
  chunkDelayMs: Number(process.argv[3]),
});
process.on('message', (command: UpstreamCommand) => {
  if (command.op === 'counts') {
    const counts: [string, WireCount][] = [...upstream.counts].map(([id, c]) => [
      id,
      { ...c, keys: [...c.keys] },
    ]);
    process.send?.({ op: 'counts', nonce: command.nonce, counts });
  } else if (command.op === 'close') {
    void upstream.close().then(() => process.exit(0));
  }
});
process.on('disconnect', () => process.exit(0));
process.send({ url: upstream.url });
