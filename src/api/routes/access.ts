import type { FastifyInstance } from 'fastify';
import type { ApiDeps } from '../server.ts';
import { requireAdmin } from '../auth.ts';
import { UserError } from '../../identity/identity-service.ts';
import { ACCESS_ACTIONS, type AccessAction } from '../../store/types.ts';
import { decide } from '../../access/access-policy.ts';

/** GET /api/v1/access/check: what the access stage would decide, and why (administrators only). */
export async function accessRoutes(app: FastifyInstance, deps: ApiDeps): Promise<void> {
  app.addHook('preHandler', requireAdmin(deps.identity.access));

  app.get<{ Querystring: { identity: string; connection: string; action?: AccessAction } }>('/api/v1/access/check', {
    schema: { querystring: { type: 'object', required: ['identity', 'connection'], properties: {
      identity: { type: 'string' }, connection: { type: 'string' }, action: { type: 'string', enum: [...ACCESS_ACTIONS] } } } },
  }, async (req) => {
    const { identity: identityName, connection: connectionName, action = 'connect' } = req.query;
    const identity = await deps.store.getIdentityByName(identityName);
    if (!identity) throw new UserError(`identity "${identityName}" does not exist`, 404);
    let connection = null;
    if (connectionName !== '*') {
      connection = await deps.store.getConnectionByName(connectionName);
      if (!connection) throw new UserError(`connection "${connectionName}" does not exist`, 404);
    }
    const subject = await deps.identity.access.subjectOf(identity);
    const decision = decide(subject, action, connection);
    return { identity: identity.name, action, connection: connection?.name ?? '*', ...decision, groups: subject.groups };
  });
}
