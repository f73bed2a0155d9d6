import type { FastifyInstance } from 'fastify';
import type { ApiDeps } from '../server.ts';
import { requireAdmin } from '../auth.ts';
import { UserError } from '../../identity/identity-service.ts';

interface GrantBody { identity: string; connection: string }

const grantSchema = { body: { type: 'object', required: ['identity', 'connection'], additionalProperties: false, properties: {
  identity: { type: 'string' }, connection: { type: 'string' } } } };

export async function grantRoutes(app: FastifyInstance, deps: ApiDeps): Promise<void> {
  app.addHook('preHandler', requireAdmin);

  const resolve = async (b: GrantBody) => {
    const identity = await deps.store.getIdentityByName(b.identity);
    if (!identity) throw new UserError(`identity "${b.identity}" does not exist`, 404);
    const connection = await deps.store.getConnectionByName(b.connection);
    if (!connection) throw new UserError(`connection "${b.connection}" does not exist`, 404);
    return { identity, connection };
  };

  app.get('/api/v1/grants', async () => (await deps.store.listGrants()).map((g) => ({
    identity: g.identityName, connection: g.connectionName, createdAt: new Date(g.createdAt).toISOString(),
  })));

  app.post<{ Body: GrantBody }>('/api/v1/grants', { schema: grantSchema }, async (req, reply) => {
    const { identity, connection } = await resolve(req.body);
    const created = await deps.store.addGrant(identity.id, connection.id, Date.now());
    return reply.code(created ? 201 : 200).send({ identity: identity.name, connection: connection.name, created });
  });

  app.delete<{ Body: GrantBody }>('/api/v1/grants', { schema: grantSchema }, async (req) => {
    const { identity, connection } = await resolve(req.body);
    if (!(await deps.store.removeGrant(identity.id, connection.id))) {
      throw new UserError(`identity "${identity.name}" has no grant on connection "${connection.name}"`, 404);
    }
    return { identity: identity.name, connection: connection.name, revoked: true };
  });
}
