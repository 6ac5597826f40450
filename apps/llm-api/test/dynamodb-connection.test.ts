import { describe, expect, it } from 'vitest';
import { dynamoDbCallBudget, SDK_RETRY_PAUSE_MS } from '../src/stores/dynamodb-connection.js';

describe('the DynamoDB client budget', () => {
  it('keeps a whole call, retries and the pause between them, below the store timeout', () => {
    // Every store timeout the configuration accepts (IDEM_STORE_TIMEOUT_MS: 50..60000).
    const over: number[] = [];
    for (let storeTimeoutMs = 50; storeTimeoutMs <= 60_000; storeTimeoutMs++) {
      const budget = dynamoDbCallBudget(storeTimeoutMs);
      const whole =
        budget.maxAttempts * budget.requestTimeoutMs +
        (budget.maxAttempts - 1) * SDK_RETRY_PAUSE_MS;
      if (!(whole < storeTimeoutMs && budget.requestTimeoutMs >= 1)) over.push(storeTimeoutMs);
    }
    expect(over).toEqual([]);
  });

  it('gives a second attempt (on a new connection) whenever the timeout leaves room for one', () => {
    expect(dynamoDbCallBudget(1_000)).toEqual({
      requestTimeoutMs: 395,
      connectionTimeoutMs: 395,
      maxAttempts: 2,
    });
    expect(dynamoDbCallBudget(2_000).maxAttempts).toBe(2);
    expect(dynamoDbCallBudget(300).maxAttempts).toBe(1);
  });
});
