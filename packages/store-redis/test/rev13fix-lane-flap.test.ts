/**
 * rev13fix adversarial review of the lane fix (a1e7ae9): lanes whose connection ended or
 * failed are replaced at the next round. Attack that HELD: the XREAD connections of one
 * primary are killed again and again (a flapping path) while readers wait on two primaries;
 * the connections this process holds to that primary stay bounded (at most 4 lanes plus the
 * Cluster's own), nothing piles up, and afterwards a reader there is woken by its entry at
 * once. A Cluster of its own; never the shared services.
 */
import { describe, expect, it } from 'vitest';
import { killXreadConnections, laneChannel, primaryOf, useLaneCluster } from './cluster-lanes.js';
import { cli, redisBinariesAvailable } from './redis-servers.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe.skipIf(!redisBinariesAvailable())('rev13fix: lanes of a flapping primary', () => {
  const cluster = useLaneCluster({ commandTimeoutMs: 2_000, maxReconnectDelayMs: 200 });

  it('killing the lanes of one primary 15 times leaves its connections bounded and wakes working', {
    timeout: 30_000,
  }, async () => {
    const { store, prefix, live } = laneChannel(cluster, 'r13fxf', 300);
    const picked: { key: string; node: string }[] = [];
    for (let i = 0; i < 60 && picked.length < 6; i++) {
      const key = `k${i}`;
      picked.push({ key, node: await primaryOf(cluster, `${prefix}${store.redisKey(key)}:1`) });
    }
    const target = picked[0]?.node as string;
    const portOf = (node: string) => Number(node.split(':')[1]);
    const controller = new AbortController();
    const publishers = picked.map(({ key }) =>
      live.publish({ storageKey: key, fence: 1, leaseMs: 20_000, signal: controller.signal }),
    );
    for (const publisher of publishers)
      publisher.append({ kind: 'head', status: 200, headers: [] });
    await sleep(200);
    // Readers that keep waiting on every stream throughout.
    let keeping = true;
    const keepers = picked.map(async ({ key }) => {
      const reader = live.open({ storageKey: key, fence: 1 });
      while (keeping) await reader.next({ waitMs: 400, maxEntries: 100 });
      reader.close();
    });
    const ours = async (port: number) =>
      (await cli({ port }, 'client', 'list', 'type', 'normal'))
        .split('\n')
        .filter((line) => line.length > 0 && !/ cmd=client\|list /.test(line)).length;
    await sleep(400);
    const before = await ours(portOf(target));
    let killed = 0;
    let most = 0;
    for (let round = 0; round < 15; round++) {
      killed += await killXreadConnections(portOf(target));
      await sleep(150 + (round % 3) * 100);
      most = Math.max(most, await ours(portOf(target)));
    }
    await sleep(800);
    const after = await ours(portOf(target));
    // A reader on the flapped primary is woken by its entry.
    const first = picked[0] as { key: string };
    const reader = live.open({ storageKey: first.key, fence: 1 });
    await reader.next({ waitMs: 0, maxEntries: 100 });
    const waiting = reader.next({ waitMs: 5_000, maxEntries: 100 });
    await sleep(150);
    const sentAt = performance.now();
    publishers[0]?.append({ kind: 'chunk', offset: 0, bytes: new Uint8Array([1]) });
    const got = await waiting;
    const ms = performance.now() - sentAt;
    reader.close();
    keeping = false;
    await Promise.all(keepers);
    controller.abort();
    console.log(
      `[rev13fix lane flap] killed=${killed} connections to the primary before=${before} most=${most} after=${after} wake=${Math.round(ms)} ms`,
    );
    expect(killed).toBeGreaterThan(5);
    // 2 Cluster node connections (client, blocking) + at most 4 lanes.
    expect(most).toBeLessThanOrEqual(6);
    expect(after).toBeLessThanOrEqual(6);
    expect(got.status).toBe('entries');
    expect(ms).toBeLessThan(1_000);
  });
});
