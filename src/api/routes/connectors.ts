import type { FastifyInstance } from 'fastify';
import type { ApiDeps } from '../server.ts';
import { authenticate, requireAdmin } from '../auth.ts';
import { UserError } from '../../identity/identity-service.ts';
import { generateToken, hashToken } from '../../crypto/tokens.ts';
import { newId } from '../../util/ids.ts';
import { signConnectorCsr } from '../../connector/ca.ts';

/** Enrollment tokens are single-use and short-lived. */
const ENROLLMENT_TTL_MS = 15 * 60_000;
const NAME = '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$';

export async function connectorRoutes(app: FastifyInstance, deps: ApiDeps): Promise<void> {
  const connectors = deps.connectors;

  // Unauthenticated by bearer token: the single-use enrollment token in the body is the credential.
  app.post<{ Body: { name: string; token: string; csr: string } }>('/api/v1/connectors/enroll', {
    schema: { body: { type: 'object', required: ['name', 'token', 'csr'], additionalProperties: false, properties: {
      name: { type: 'string', pattern: NAME }, token: { type: 'string', maxLength: 200 }, csr: { type: 'string', maxLength: 8192 } } } },
  }, async (req) => {
    const refused = new UserError('enrollment refused: the token is unknown, used, expired, or for another connector', 401);
    // Consumed before anything else: of concurrent requests with one token, exactly one proceeds.
    if (!(await deps.store.consumeEnrollmentToken(req.body.name, hashToken(req.body.token), Date.now()))) throw refused;
    const record = await deps.store.getConnectorByName(req.body.name);
    if (!record) throw refused;
    let signed: { certPem: string; serial: string };
    try {
      signed = await signConnectorCsr(connectors.ca, req.body.csr, record.name);
    } catch (err) {
      throw new UserError(`enrollment refused: ${(err as Error).message} (the token is used up; issue a new one)`);
    }
    await deps.store.updateConnector({ ...record, enrollmentTokenHash: null, enrollmentExpiresAt: null, enrolledAt: Date.now(), certSerial: signed.serial });
    deps.log.info({ connector: record.name }, 'connector enrolled');
    return { certificate: signed.certPem, caCertificate: connectors.ca.certPem, tunnel: connectors.publicAddress };
  });

  app.register(async (admin) => {
    admin.addHook('onRequest', authenticate(deps.identity, deps.authThrottle));
    admin.addHook('preHandler', requireAdmin(deps.identity.access));

    admin.post<{ Body: { name: string } }>('/api/v1/connectors', {
      schema: { body: { type: 'object', required: ['name'], additionalProperties: false, properties: { name: { type: 'string', pattern: NAME } } } },
    }, async (req, reply) => {
      const existing = await deps.store.getConnectorByName(req.body.name);
      const token = generateToken();
      const expiresAt = Date.now() + ENROLLMENT_TTL_MS;
      if (existing && existing.revokedAt === null && existing.enrolledAt !== null) {
        throw new UserError(`connector "${req.body.name}" is already enrolled; remove it first to enroll it again`, 409);
      }
      if (existing) {
        // A new token for a connector that never enrolled (or was removed): the old token dies.
        await deps.store.updateConnector({ ...existing, enrollmentTokenHash: hashToken(token), enrollmentExpiresAt: expiresAt, enrolledAt: null, certSerial: null, revokedAt: null });
      } else {
        await deps.store.createConnector({
          id: newId('cn'), name: req.body.name, createdAt: Date.now(), enrollmentTokenHash: hashToken(token), enrollmentExpiresAt: expiresAt,
          enrolledAt: null, certSerial: null, revokedAt: null,
        });
      }
      return reply.code(201).send({
        name: req.body.name, enrollmentToken: token, expiresAt: new Date(expiresAt).toISOString(),
        // What the connector pins at enrollment (--gateway-fingerprint); absent when the API is plain HTTP.
        ...(connectors.apiFingerprint ? { gatewayFingerprint: connectors.apiFingerprint } : {}),
      });
    });

    admin.get('/api/v1/connectors', async () => {
      const live = connectors.tunnels.list();
      return (await deps.store.listConnectors()).map((c) => {
        const tunnels = live.filter((t) => t.name === c.name);
        const status = c.revokedAt !== null ? 'revoked' : c.enrolledAt === null ? 'awaiting enrollment' : tunnels.length > 0 ? 'connected' : 'disconnected';
        return {
          name: c.name, status, enrolledAt: c.enrolledAt ? new Date(c.enrolledAt).toISOString() : null,
          version: tunnels[0]?.version ?? null, address: tunnels[0]?.remoteAddr ?? null,
          lastSeen: tunnels.length ? new Date(Math.max(...tunnels.map((t) => t.lastSeen))).toISOString() : null,
          tunnels: tunnels.length, openStreams: tunnels.reduce((n, t) => n + t.openStreams, 0), allow: tunnels[0]?.allow ?? [],
        };
      });
    });

    admin.delete<{ Params: { name: string } }>('/api/v1/connectors/:name', async (req) => {
      const c = await deps.store.getConnectorByName(req.params.name);
      if (!c || c.revokedAt !== null) throw new UserError(`connector "${req.params.name}" does not exist`, 404);
      await deps.store.updateConnector({ ...c, enrollmentTokenHash: null, enrollmentExpiresAt: null, revokedAt: Date.now() });
      connectors.tunnels.disconnect(c.name);
      deps.log.warn({ connector: c.name }, 'connector revoked; its tunnels are cut');
      return { revoked: c.name };
    });
  });
}
