import { DynamoDBClient } from '@aws-sdk/client-dynamodb';

/** A DynamoDB client for DynamoDB Local (dummy credentials). */
export function localClient(endpoint: string): DynamoDBClient {
  return new DynamoDBClient({
    endpoint,
    region: 'us-east-1',
    credentials: { accessKeyId: 'idemlocal', secretAccessKey: 'idemlocal' },
  });
}
