/**
 * Entry of the fault proxy's own process (see proxy-process.ts): argv[2] is the target port.
 * It reports `{ port }` once listening, then applies each command it is sent, in order.
 */
import type { ProxyCommand } from './proxy-process.js';
import { startTcpFaultProxy } from './tcp-fault-proxy.js';

const target = Number(process.argv[2]);
if (!Number.isInteger(target) || target <= 0 || !process.send) {
  console.error('proxy-child: expected a target port and an IPC channel');
  process.exit(2);
}
const proxy = await startTcpFaultProxy(target);
process.on('message', (command: ProxyCommand) => {
  if (command.op === 'mode') proxy.setMode(command.mode);
  else if (command.op === 'drop-some') proxy.dropSome(command.fraction);
  else if (command.op === 'close') {
    void proxy.close().then(() => process.exit(0));
  }
});
// The suite went away without closing: so does the proxy.
process.on('disconnect', () => process.exit(0));
process.send?.({ port: proxy.port });
