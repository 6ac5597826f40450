import type { IdempotencyContext } from '@idem/http';
import type { Ledger } from '../ledger/ledger.js';
import { type ChatModel, collect } from '../model/model.js';
import { BadRequestError, modelName, readJsonObject, responseForError } from './errors.js';
import {
  billingTarget,
  type MeteringOptions,
  metered,
  meteringFor,
  upstreamKey,
} from './metering.js';

/**
 * `POST /api/messages` with `{ prompt, model }`: creates a message and answers
 * `201 { id, status: 'created', model, content, usage }`. Runs inside the idempotent
 * execution: the tokens are billed under the message id before the answer is recorded.
 */
export function messagesHandler(model: ChatModel, ledger: Ledger, metering: MeteringOptions) {
  return async (
    request: Request,
    context: IdempotencyContext | undefined,
    answerLate?: () => void,
  ): Promise<Response> => {
    try {
      const body = await readJsonObject(request);
      const { prompt } = body;
      if (typeof prompt !== 'string' || prompt.length === 0) {
        throw new BadRequestError('`prompt` must be a non-empty string');
      }
      const name = modelName(body.model);
      const target = billingTarget('msg_', context);
      const { content, usage } = await collect(
        metered(
          model,
          ledger,
          {
            model: name,
            messages: [{ role: 'user', content: prompt }],
            signal: context?.signal,
            idempotencyKey: upstreamKey(context),
          },
          target,
          meteringFor(metering, context, answerLate),
        ),
      );
      return Response.json(
        { id: target.messageId, status: 'created', model: name, content, usage },
        { status: 201 },
      );
    } catch (error) {
      return responseForError(error);
    }
  };
}
