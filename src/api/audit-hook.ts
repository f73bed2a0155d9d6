// Puts every state-changing API request in the admin audit log before its handler runs: who (the
// authenticated identity, or "anonymous"), from where, which route with which parameters and body
// (credentials replaced); its outcome (the status) follows. A request that cannot be recorded is
// refused (503) and changes nothing. Routes that issue tokens without a bearer token (sign-in,
// OIDC exchange) also record whom the token was issued to, before it is released.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { auditableBody, type AdminAudit } from '../audit/admin-audit.ts';

/** POSTs that change nothing (or, for polling sign-ins, are recorded when they issue a token). */
const NOT_CHANGES = new Set(['/api/v1/policy/test', '/api/v1/ssh/host-key', '/api/v1/login/start', '/api/v1/login/poll', '/api/v1/auth/oidc-token', '/api/v1/access/check']);
/** Routes that hand out a token to a caller that had none. */
const ISSUES_TOKENS = new Set(['/api/v1/login/poll', '/api/v1/auth/oidc-token']);

declare module 'fastify' {
  interface FastifyRequest { auditRef?: number }
}

export function registerAuditHook(app: FastifyInstance, audit: AdminAudit): void {
  const routeOf = (req: FastifyRequest): string => req.routeOptions.url ?? req.url.split('?')[0]!;
  const actor = (req: FastifyRequest) => ({ name: req.identity?.name ?? 'anonymous', kind: req.identity?.kind ?? '', from: req.ip });

  app.addHook('preHandler', async (req: FastifyRequest, reply: FastifyReply) => {
    if (req.method === 'GET' || req.method === 'HEAD' || req.method === 'OPTIONS') return;
    const route = routeOf(req);
    if (!route.startsWith('/api/v1/') || NOT_CHANGES.has(route)) return;
    try {
      req.auditRef = await audit.record('request', {
        actor: actor(req), method: req.method, route, params: req.params ?? {}, body: auditableBody(req.body ?? null),
      });
    } catch (err) {
      req.log.error({ err: (err as Error).message }, 'admin audit log unavailable');
      await reply.code(503).send({ error: 'the admin audit log cannot be written right now, so the change was not made' });
    }
  });

  app.addHook('onSend', async (req: FastifyRequest, reply: FastifyReply, payload: unknown) => {
    if (!ISSUES_TOKENS.has(routeOf(req)) || reply.statusCode >= 300 || typeof payload !== 'string') return payload;
    let out: { token?: unknown; identity?: { name?: unknown; kind?: unknown }; expiresAt?: unknown; policy?: unknown };
    try { out = JSON.parse(payload) as typeof out; } catch { return payload; }
    if (typeof out.token !== 'string') return payload;
    try {
      await audit.record('token.issued', {
        actor: actor(req), route: routeOf(req), identity: { name: out.identity?.name ?? null, kind: out.identity?.kind ?? null },
        expiresAt: out.expiresAt ?? null, ...(out.policy !== undefined ? { trustPolicy: out.policy } : {}),
      });
      return payload;
    } catch (err) {
      req.log.error({ err: (err as Error).message }, 'admin audit log unavailable; token withheld');
      reply.code(503);
      return JSON.stringify({ error: 'the admin audit log cannot be written right now, so no token was issued' });
    }
  });

  app.addHook('onResponse', async (req: FastifyRequest, reply: FastifyReply) => {
    if (req.auditRef === undefined) return;
    audit.note('outcome', { ref: req.auditRef, status: reply.statusCode });
  });
}
