import type { FastifyInstance } from 'fastify';
import type { ApiDeps } from '../server.ts';
import { identityView } from './identities.ts';
import { WorkloadRefusal, WorkloadUnavailable } from '../../identity/workload/errors.ts';
import { MAX_TOKEN_LENGTH } from '../../identity/workload/verify-oidc-token.ts';

/** POST /api/v1/auth/oidc-token: an OIDC ID token in, a gatehouse token for a fresh run identity out. */
export async function workloadRoutes(app: FastifyInstance, deps: ApiDeps): Promise<void> {
  app.post<{ Body: { token: string } }>('/api/v1/auth/oidc-token', {
    schema: { body: { type: 'object', required: ['token'], additionalProperties: false, properties: {
      token: { type: 'string', minLength: 1, maxLength: MAX_TOKEN_LENGTH } } } },
  }, async (req, reply) => {
    const workload = deps.workload;
    if (!workload?.enabled) return reply.code(404).send({ error: 'this gateway has no workload identity trust policies (workload_identity in gatehouse.yaml)' });
    try {
      const out = await workload.exchange(req.body.token);
      return reply.code(201).send({ token: out.token, identity: identityView(out.identity), expiresAt: new Date(out.expiresAt).toISOString(), policy: out.policy, granted: out.granted });
    } catch (err) {
      // The OIDC token itself is never logged: only why it was refused.
      if (err instanceof WorkloadRefusal) {
        deps.log.info({ component: 'workload-identity', reason: err.message, client: req.ip }, 'OIDC token refused');
        return reply.code(401).send({ error: `OIDC token refused: ${err.message}` });
      }
      if (err instanceof WorkloadUnavailable) {
        deps.log.warn({ component: 'workload-identity', err: err.message }, 'OIDC token not checked');
        return reply.code(503).send({ error: `OIDC token not checked: ${err.message}` });
      }
      throw err;
    }
  });
}
