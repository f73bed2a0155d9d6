import type { FastifyInstance } from 'fastify';
import type { ApiDeps } from '../server.ts';
import { requireAdmin } from '../auth.ts';
import { UserError } from '../../identity/identity-service.ts';
import { ACCESS_ACTIONS, type AccessAction, type AccessGrant } from '../../store/types.ts';
import { subjectLabel } from '../../access/access-policy.ts';
import { newId } from '../../util/ids.ts';
import { isRunIdentity } from '../../identity/workload/run-identity.ts';

/** Exactly one of identity and group; connection "*" is every connection; action defaults to connect. */
interface GrantBody { identity?: string; group?: string; connection: string; action?: AccessAction }

const grantSchema = { body: { type: 'object', required: ['connection'], additionalProperties: false, properties: {
  identity: { type: 'string' }, group: { type: 'string' }, connection: { type: 'string' }, action: { type: 'string', enum: [...ACCESS_ACTIONS] } } } };

export function grantView(g: AccessGrant) {
  return {
    id: g.id, subjectType: g.subjectType, subject: subjectLabel(g), [g.subjectType]: g.subjectName, action: g.action,
    connection: g.connectionName ?? '*', createdAt: new Date(g.createdAt).toISOString(),
    ...(g.expiresAt !== null ? { expiresAt: new Date(g.expiresAt).toISOString() } : {}),
  };
}

export async function grantRoutes(app: FastifyInstance, deps: ApiDeps): Promise<void> {
  app.addHook('preHandler', requireAdmin(deps.identity.access));

  const resolve = async (b: GrantBody, adding = false) => {
    if ((b.identity === undefined) === (b.group === undefined)) throw new UserError('name exactly one of identity and group');
    let subject: Pick<AccessGrant, 'subjectType' | 'subjectId' | 'subjectName'>;
    if (b.identity !== undefined) {
      const identity = await deps.store.getIdentityByName(b.identity);
      if (!identity) throw new UserError(`identity "${b.identity}" does not exist`, 404);
      if (adding && b.action === 'admin' && isRunIdentity(identity)) throw new UserError(`identity "${identity.name}" is a run identity, which is never an administrator`, 409);
      subject = { subjectType: 'identity', subjectId: identity.id, subjectName: identity.name };
    } else {
      const group = await deps.store.getGroupByName(b.group!);
      if (!group) throw new UserError(`group "${b.group}" does not exist (add it with \`gatehouse group add\`)`, 404);
      subject = { subjectType: 'group', subjectId: group.id, subjectName: group.name };
    }
    let connection: { id: string; name: string } | null = null;
    if (b.connection !== '*') {
      connection = (await deps.store.getConnectionByName(b.connection)) ?? null;
      if (!connection) throw new UserError(`connection "${b.connection}" does not exist`, 404);
    }
    return { ...subject, action: b.action ?? 'connect', connectionId: connection?.id ?? null, connectionName: connection?.name ?? null };
  };

  app.get('/api/v1/grants', async () => (await deps.store.listAccessGrants()).map(grantView));

  app.post<{ Body: GrantBody }>('/api/v1/grants', { schema: grantSchema }, async (req, reply) => {
    const g: AccessGrant = { id: newId('grant'), createdAt: Date.now(), expiresAt: null, ...await resolve(req.body, true) };
    const policies = g.action === 'admin' && g.subjectType === 'group' ? deps.workload?.policiesNaming(g.subjectName) ?? [] : [];
    if (policies.length) {
      // The gateway would refuse to start with it, and the access stage would ignore it for run identities anyway.
      throw new UserError(`group ${g.subjectName} is given to run identities by trust ${policies.length === 1 ? 'policy' : 'policies'} ${policies.map((p) => `"${p}"`).join(', ')}, and a run identity is never an administrator: grant admin to another group`, 409);
    }
    const created = await deps.store.addAccessGrant(g);
    // An existing equal grant keeps its own id: this one's was never stored.
    return reply.code(created ? 201 : 200).send({ ...grantView(g), id: created ? g.id : undefined, created });
  });

  app.delete<{ Body: GrantBody }>('/api/v1/grants', { schema: grantSchema }, async (req) => {
    const g = await resolve(req.body);
    if (!(await deps.store.removeAccessGrant(g.subjectType, g.subjectId, g.action, g.connectionId))) {
      const on = g.connectionName === null ? 'every connection (*)' : `connection "${g.connectionName}"`;
      throw new UserError(`${g.subjectType} "${g.subjectName}" has no grant to ${g.action} on ${on}`, 404);
    }
    // Open sessions admitted on this grant end now, unless another grant still allows them.
    const endedSessions = g.action === 'connect' ? (await deps.sessions.accessChanged('grant revoked')).length : 0;
    return { subject: subjectLabel(g), action: g.action, connection: g.connectionName ?? '*', revoked: true, endedSessions };
  });
}
