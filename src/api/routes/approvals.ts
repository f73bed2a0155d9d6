// Approval requests: an approver lists the pending requests it may decide and approves or denies
// them; the holding session goes on (or is refused) as soon as the request is decided.
import type { FastifyInstance } from 'fastify';
import type { ApiDeps } from '../server.ts';
import { approvalView } from '../../approvals/approval-service.ts';

const ID = '^apr_[A-Za-z0-9_-]{1,64}$';

export async function approvalRoutes(app: FastifyInstance, deps: ApiDeps): Promise<void> {
  app.get('/api/v1/approvals', async (req) => (await deps.approvals.pendingFor(req.identity!)).map(approvalView));

  for (const decision of ['approve', 'deny'] as const) {
    app.post<{ Params: { id: string }; Body: { reason?: string } }>(`/api/v1/approvals/:id/${decision}`, {
      schema: {
        params: { type: 'object', properties: { id: { type: 'string', pattern: ID } } },
        body: { type: 'object', additionalProperties: false, ...(decision === 'deny' ? { required: ['reason'] } : {}),
          properties: { reason: { type: 'string', minLength: 1, maxLength: 1000 } } },
      },
    }, async (req) => approvalView(await deps.approvals.decide(req.params.id, req.identity!, decision, req.body?.reason ?? null)));
  }
}
