// Reading the admin audit log: entries of every gateway, in time order. Administrators only.
// Its integrity is checked with the recordings (`gatehouse verify --store`).
import type { FastifyInstance } from 'fastify';
import type { ApiDeps } from '../server.ts';
import { requireAdmin } from '../auth.ts';

export async function auditRoutes(app: FastifyInstance, deps: ApiDeps): Promise<void> {
  app.addHook('preHandler', requireAdmin(deps.identity.access));

  app.get<{ Querystring: { since?: number; limit?: number } }>('/api/v1/audit', {
    schema: { querystring: { type: 'object', properties: { since: { type: 'integer', minimum: 0 }, limit: { type: 'integer', minimum: 1, maximum: 100_000 } } } },
  }, async (req) => {
    const entries = await deps.store.listAuditEntries((req.query.since ?? 0) * 1000, req.query.limit ?? 1000);
    return entries.map((e) => ({ at: new Date(Math.floor(e.ts / 1000)).toISOString(), gateway: e.gatewayId, seq: e.seq, action: e.type, data: JSON.parse(e.data) as unknown }));
  });
}
