import { OutcomeCorruptError } from './errors.js';

/**
 * gzip of `bytes` with the platform's `CompressionStream` (Node, Bun, Deno, workerd and
 * browsers all have it).
 * @internal
 */
export async function gzip(bytes: Uint8Array): Promise<Uint8Array> {
  const stream = new Blob([bytes as Uint8Array<ArrayBuffer>])
    .stream()
    .pipeThrough(new CompressionStream('gzip'));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/**
 * Inflates gzip `bytes` that must give exactly `length` bytes: reading stops (and fails) as
 * soon as more come out, so a forged length or a compression bomb costs at most `length`
 * bytes of memory.
 * @throws OutcomeCorruptError when the data is not gzip or does not inflate to `length` bytes
 * @internal
 */
export async function gunzip(bytes: Uint8Array, length: number): Promise<Uint8Array> {
  const inflate = new DecompressionStream('gzip');
  const writer = inflate.writable.getWriter();
  // Failures surface on the reading side; these promises must not go unhandled.
  writer.write(bytes as Uint8Array<ArrayBuffer>).catch(() => {});
  writer.close().catch(() => {});
  const reader = inflate.readable.getReader();
  const out = new Uint8Array(length);
  let at = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    if (at + value.length > length) {
      reader.cancel().catch(() => {});
      throw new OutcomeCorruptError('Stored outcome inflates past its recorded length');
    }
    out.set(value, at);
    at += value.length;
  }
  if (at !== length) throw new OutcomeCorruptError('Stored outcome inflates short of its length');
  return out;
}
