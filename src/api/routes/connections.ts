import type { FastifyInstance } from 'fastify';
import type { ApiDeps } from '../server.ts';
import { requireAdmin } from '../auth.ts';
import { UserError } from '../../identity/identity-service.ts';
import type { Connection } from '../../store/types.ts';
import { newId } from '../../util/ids.ts';

/** What the API shows of a connection: never the credential, only whether one is stored. */
export function connectionView(c: Connection) {
  return {
    id: c.id, name: c.name, type: c.type, host: c.host, port: c.port, database: c.database, user: c.username,
    hasPassword: c.sealedSecret !== null, options: c.options, createdAt: new Date(c.createdAt).toISOString(),
  };
}

interface ConnectionBody {
  name: string; type: 'postgres'; host: string; port: number; database: string; user: string; password?: string;
  sslmode?: 'disable' | 'prefer' | 'require';
  recording?: 'durable' | 'best-effort';
  retentionSeconds?: number;
  via?: string[];
}

export async function connectionRoutes(app: FastifyInstance, deps: ApiDeps): Promise<void> {
  app.addHook('preHandler', requireAdmin);

  app.get('/api/v1/connections', async () => (await deps.store.listConnections()).map(connectionView));

  app.post<{ Body: ConnectionBody }>('/api/v1/connections', {
    schema: { body: { type: 'object', required: ['name', 'type', 'host', 'port', 'database', 'user'], additionalProperties: false, properties: {
      name: { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$' },
      type: { type: 'string', enum: ['postgres'] },
      host: { type: 'string', minLength: 1, maxLength: 255 },
      port: { type: 'integer', minimum: 1, maximum: 65535 },
      database: { type: 'string', minLength: 1, maxLength: 63 },
      user: { type: 'string', minLength: 1, maxLength: 63 },
      password: { type: 'string', maxLength: 1024 },
      sslmode: { type: 'string', enum: ['disable', 'prefer', 'require'] },
      recording: { type: 'string', enum: ['durable', 'best-effort'] },
      retentionSeconds: { type: 'integer', minimum: 1 },
      via: { type: 'array', maxItems: 16, items: { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$' } },
    } } },
  }, async (req, reply) => {
    const b = req.body;
    for (const name of b.via ?? []) {
      const c = await deps.store.getConnectorByName(name);
      if (!c || c.revokedAt !== null) throw new UserError(`connector "${name}" does not exist (add it with \`gatehouse connector add ${name}\`)`, 404);
    }
    if (await deps.store.getConnectionByName(b.name)) throw new UserError(`connection "${b.name}" already exists`, 409);
    const id = newId('conn');
    const connection: Connection = {
      id, name: b.name, type: b.type, host: b.host, port: b.port, database: b.database, username: b.user,
      sealedSecret: b.password ? deps.secrets.seal(b.password, id) : null,
      options: { ...(b.sslmode ? { sslmode: b.sslmode } : {}), ...(b.recording ? { recording: b.recording } : {}),
        ...(b.retentionSeconds ? { retentionSeconds: b.retentionSeconds } : {}),
        ...(b.via && b.via.length > 0 ? { via: b.via } : {}) }, createdAt: Date.now(),
    };
    await deps.store.createConnection(connection);
    return reply.code(201).send(connectionView(connection));
  });

  app.delete<{ Params: { name: string } }>('/api/v1/connections/:name', async (req) => {
    const c = await deps.store.getConnectionByName(req.params.name);
    if (!c) throw new UserError(`connection "${req.params.name}" does not exist`, 404);
    await deps.store.deleteConnection(c.id);
    for (const e of deps.engines) e.connectionChanged?.(c.id);
    return { deleted: c.name };
  });
}
