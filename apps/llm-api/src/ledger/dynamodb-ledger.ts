import {
  BatchGetItemCommand,
  ConditionalCheckFailedException,
  type DynamoDBClient,
  GetItemCommand,
  PutItemCommand,
  ScanCommand,
  UpdateItemCommand,
} from '@aws-sdk/client-dynamodb';
import {
  type Ledger,
  type LedgerEntry,
  StaleFenceError,
  type StatName,
  zeroStats,
} from './ledger.js';

/** Items the counters are spread over (see `count`). */
const STATS_SHARDS = 16;

/**
 * The ledger in the idempotency table itself (partition key `pk`, type S): one item per
 * message id under `<prefix>ledger#<id>`, written by a conditional PutItem (no item, or a
 * lower fence), and a counters item `<prefix>stats`. Listing scans the table, which suits a
 * demo; a production ledger would sit in its own table with a query-able key.
 */
export function createDynamoDbLedger(
  client: DynamoDBClient,
  tableName: string,
  prefix: string,
  timeoutMs: number,
): Ledger {
  const ledgerPrefix = `${prefix}ledger#`;
  // The counters are spread over STATS_SHARDS items, each increment to one picked at random,
  // and read back together: one counters item would take every request's writes, and an
  // item takes its writes one at a time (DynamoDB limits one item to 1,000 writes a second;
  // DynamoDB Local serialises them, which made the counters the bottleneck of the app after
  // a restart). The unsharded item of earlier versions is read too, so no count is lost.
  const statsKeys = [
    { pk: { S: `${prefix}stats` } },
    ...Array.from({ length: STATS_SHARDS }, (_, i) => ({ pk: { S: `${prefix}stats#${i}` } })),
  ];
  // Each call (the SDK's retries included) ends at the limit; see also boundLedger.
  const limit = () => ({ abortSignal: AbortSignal.timeout(timeoutMs) });

  async function currentFence(id: string): Promise<number | undefined> {
    const got = await client.send(
      new GetItemCommand({
        TableName: tableName,
        Key: { pk: { S: `${ledgerPrefix}${id}` } },
        ConsistentRead: true,
      }),
      limit(),
    );
    const fence = got.Item?.fence?.N;
    return fence === undefined ? undefined : Number(fence);
  }

  return {
    async bill(entry: LedgerEntry) {
      try {
        const put = await client.send(
          new PutItemCommand({
            TableName: tableName,
            Item: {
              pk: { S: `${ledgerPrefix}${entry.messageId}` },
              fence: { N: String(entry.fence) },
              entry: { S: JSON.stringify(entry) },
            },
            ConditionExpression: 'attribute_not_exists(pk) OR fence < :fence',
            ExpressionAttributeValues: { ':fence': { N: String(entry.fence) } },
            ReturnValues: 'ALL_OLD',
          }),
          limit(),
        );
        return put.Attributes ? 'replaced' : 'billed';
      } catch (error) {
        if (!(error instanceof ConditionalCheckFailedException)) throw error;
        const current = (await currentFence(entry.messageId)) ?? entry.fence;
        if (current === entry.fence) return 'duplicate';
        throw new StaleFenceError(entry.messageId, entry.fence, current);
      }
    },
    async entries() {
      const all: LedgerEntry[] = [];
      const options = limit();
      let start: Record<string, import('@aws-sdk/client-dynamodb').AttributeValue> | undefined;
      do {
        const page = await client.send(
          new ScanCommand({
            TableName: tableName,
            FilterExpression: 'begins_with(pk, :p)',
            ExpressionAttributeValues: { ':p': { S: ledgerPrefix } },
            ConsistentRead: true,
            ExclusiveStartKey: start,
          }),
          options,
        );
        for (const item of page.Items ?? []) {
          if (item.entry?.S) all.push(JSON.parse(item.entry.S) as LedgerEntry);
        }
        start = page.LastEvaluatedKey;
      } while (start);
      return all.sort((a, b) => a.billedAt - b.billedAt);
    },
    async count(name: StatName) {
      await client.send(
        new UpdateItemCommand({
          TableName: tableName,
          Key: statsKeys[1 + Math.floor(Math.random() * STATS_SHARDS)],
          UpdateExpression: 'ADD #n :one',
          ExpressionAttributeNames: { '#n': name },
          ExpressionAttributeValues: { ':one': { N: '1' } },
        }),
        limit(),
      );
    },
    async stats() {
      const options = limit();
      const stats = zeroStats();
      let keys: Record<string, import('@aws-sdk/client-dynamodb').AttributeValue>[] = statsKeys;
      // BatchGetItem may answer part of the keys and hand the rest back: ask again for those
      // (a few times; the call's time limit bounds it too).
      for (let round = 0; keys.length > 0; round++) {
        if (round === 5) throw new Error('DynamoDB left counters unread after 5 BatchGetItems');
        const got = await client.send(
          new BatchGetItemCommand({
            RequestItems: { [tableName]: { Keys: keys, ConsistentRead: true } },
          }),
          options,
        );
        for (const item of got.Responses?.[tableName] ?? []) {
          for (const name of Object.keys(stats) as StatName[]) {
            stats[name] += Number(item[name]?.N ?? 0);
          }
        }
        keys = got.UnprocessedKeys?.[tableName]?.Keys ?? [];
      }
      return stats;
    },
  };
}
