import type { FastifyInstance } from 'fastify';
import type { ApiDeps } from '../server.ts';
import { requireAdmin } from '../auth.ts';
import { UserError } from '../../identity/identity-service.ts';
import { GROUP_NAME } from '../../store/types.ts';
import { newId } from '../../util/ids.ts';

/** Groups and their explicit members (identities also carry external groups; see docs/access.md). */
export async function groupRoutes(app: FastifyInstance, deps: ApiDeps): Promise<void> {
  app.addHook('preHandler', requireAdmin(deps.identity.access));

  const groupNamed = async (name: string) => {
    const group = await deps.store.getGroupByName(name);
    if (!group) throw new UserError(`group "${name}" does not exist`, 404);
    return group;
  };
  const identityNamed = async (name: string) => {
    const identity = await deps.store.getIdentityByName(name);
    if (!identity) throw new UserError(`identity "${name}" does not exist`, 404);
    return identity;
  };

  app.get('/api/v1/groups', async () => {
    const [groups, members] = await Promise.all([deps.store.listGroups(), deps.store.listGroupMembers()]);
    return groups.map((g) => ({
      name: g.name, members: members.filter((m) => m.groupId === g.id).map((m) => m.identityName), createdAt: new Date(g.createdAt).toISOString(),
    }));
  });

  app.post<{ Body: { name: string } }>('/api/v1/groups', {
    schema: { body: { type: 'object', required: ['name'], additionalProperties: false, properties: { name: { type: 'string', maxLength: 128 } } } },
  }, async (req, reply) => {
    const { name } = req.body;
    if (!GROUP_NAME.test(name)) throw new UserError(`invalid group name "${name}" (letters, digits, space . _ @ : / + = , -; starts with a letter or digit; at most 128 characters)`);
    if (await deps.store.getGroupByName(name)) throw new UserError(`group "${name}" already exists`, 409);
    const createdAt = Date.now();
    await deps.store.createGroup({ id: newId('grp'), name, createdAt });
    return reply.code(201).send({ name, members: [], createdAt: new Date(createdAt).toISOString() });
  });

  app.delete<{ Params: { name: string } }>('/api/v1/groups/:name', async (req) => {
    const group = await groupNamed(req.params.name);
    await deps.store.deleteGroup(group.id);
    return { deleted: group.name, endedSessions: (await deps.sessions.accessChanged('group removed')).length };
  });

  app.post<{ Params: { name: string }; Body: { identity: string } }>('/api/v1/groups/:name/members', {
    schema: { body: { type: 'object', required: ['identity'], additionalProperties: false, properties: { identity: { type: 'string' } } } },
  }, async (req, reply) => {
    const group = await groupNamed(req.params.name);
    const identity = await identityNamed(req.body.identity);
    const created = await deps.store.addGroupMember(group.id, identity.id, Date.now());
    return reply.code(created ? 201 : 200).send({ group: group.name, identity: identity.name, created });
  });

  app.delete<{ Params: { name: string; identity: string } }>('/api/v1/groups/:name/members/:identity', async (req) => {
    const group = await groupNamed(req.params.name);
    const identity = await identityNamed(req.params.identity);
    if (!(await deps.store.removeGroupMember(group.id, identity.id))) throw new UserError(`identity "${identity.name}" is not a member of group "${group.name}"`, 404);
    return { group: group.name, identity: identity.name, removed: true, endedSessions: (await deps.sessions.accessChanged('group membership removed')).length };
  });
}
