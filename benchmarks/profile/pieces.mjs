/**
 * The cost of the pieces every idem call pays, each alone in a loop (µs per call, median of
 * 5 runs): `node profile/pieces.mjs`. The floor of a replay in process is their sum.
 */
import * as crypto from 'node:crypto';
import { createIdempotency } from '@idem/core';
import { createMemoryStore } from '@idem/store-memory';

const N = 200_000;
const json = JSON.stringify({ key: 'replay-1', data: 'x'.repeat(490) });
const bytes = new TextEncoder().encode(json);
const latin1 = Buffer.from(bytes).toString('latin1');
const keyInput = Buffer.alloc(120, 7);
const decoder = new TextDecoder();
const encoder = new TextEncoder();
const value = JSON.parse(json);
let sink;
const pieces = {
  'SHA-256 of the storage key input (crypto.hash)': () => {
    sink = crypto.hash('sha256', keyInput, 'hex');
  },
  'owner token (randomUUID)': () => {
    sink = crypto.randomUUID();
  },
  'copy out of a held 512-byte outcome (new Uint8Array + latin1 write)': () => {
    const out = new Uint8Array(latin1.length);
    Buffer.from(out.buffer).write(latin1, 'latin1');
    sink = out;
  },
  'TextDecoder of 512 bytes': () => {
    sink = decoder.decode(bytes);
  },
  'JSON.stringify of the 512-byte result': () => {
    sink = JSON.stringify(value);
  },
  'encode a 560-byte outcome (new Uint8Array + encodeInto)': () => {
    const out = new Uint8Array(bytes.length + 48);
    encoder.encodeInto(json, out.subarray(48));
    sink = out;
  },
  'hold a 512-byte outcome as a Latin-1 string (the memory store)': () => {
    sink = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('latin1');
  },
  'JSON.parse of the 512-byte result': () => {
    sink = JSON.parse(json);
  },
  'setTimeout + clearTimeout': () => {
    clearTimeout(setTimeout(() => {}, 5_000));
  },
};
const median = (values) => values.sort((a, b) => a - b)[Math.floor(values.length / 2)];
for (const [name, fn] of Object.entries(pieces)) {
  const runs = [];
  for (let r = 0; r < 5; r++) {
    const t0 = performance.now();
    for (let i = 0; i < N; i++) fn();
    runs.push(((performance.now() - t0) * 1000) / N);
  }
  console.log(`${median(runs).toFixed(3)} µs  ${name}`);
}
// A whole replay through execute() on the memory store, one at a time.
const engine = createIdempotency({ store: createMemoryStore() });
await engine.execute({ key: 'k' }, async () => JSON.parse(json));
const runs = [];
for (let r = 0; r < 5; r++) {
  const t0 = performance.now();
  for (let i = 0; i < N / 4; i++) sink = await engine.execute({ key: 'k' }, async () => 0);
  runs.push(((performance.now() - t0) * 1000) / (N / 4));
}
console.log(`${median(runs).toFixed(3)} µs  a whole replay: execute() on the memory store`);
void sink;
