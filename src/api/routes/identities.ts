import type { FastifyInstance } from 'fastify';
import type { ApiDeps } from '../server.ts';
import { requireAdmin } from '../auth.ts';
import { UserError } from '../../identity/identity-service.ts';
import { hashToken } from '../../crypto/tokens.ts';
import { MAX_TOKEN_TTL_S } from '../../util/duration.ts';
import { IDENTITY_KINDS, type Identity, type IdentityKind, type PublicKeyRecord, type TokenRecord } from '../../store/types.ts';
import { parsePublicKeyLine } from '../../engines/ssh/keys.ts';
import { newId } from '../../util/ids.ts';
import type { EffectiveGroup } from '../../access/access-policy.ts';


/**
 * `standing`: the identity's effective groups and administrator status as the access stage sees
 * them; without it (a fresh identity) the bootstrap flag and its external groups are all there is.
 */
export function identityView(i: Identity, standing?: { admin: boolean; groups: EffectiveGroup[] }) {
  const groups = standing ? standing.groups.map((g) => g.name) : i.externalGroups ?? [];
  return {
    id: i.id, name: i.name, kind: i.kind, admin: standing?.admin ?? i.isAdmin, createdAt: new Date(i.createdAt).toISOString(),
    ...(i.authSource ? { authSource: i.authSource } : {}), ...(i.claims ? { claims: i.claims } : {}),
    ...(groups.length ? { groups } : {}), ...(i.externalGroups ? { externalGroups: i.externalGroups } : {}),
  };
}

function tokenView(t: TokenRecord, identityName: string, now: number) {
  const state = t.revokedAt !== null ? 'revoked' : t.expiresAt <= now ? 'expired' : 'active';
  return {
    id: t.id, identity: identityName, createdAt: new Date(t.createdAt).toISOString(), expiresAt: new Date(t.expiresAt).toISOString(),
    revokedAt: t.revokedAt === null ? null : new Date(t.revokedAt).toISOString(), state,
  };
}

function publicKeyView(k: PublicKeyRecord, identityName: string) {
  return { identity: identityName, fingerprint: k.fingerprint, publicKey: k.publicKey, createdAt: new Date(k.createdAt).toISOString() };
}

export async function identityRoutes(app: FastifyInstance, deps: ApiDeps): Promise<void> {
  app.addHook('preHandler', requireAdmin(deps.identity.access));

  // SSH public keys: an identity signs in to the SSH listener with any key registered to it.
  app.post<{ Params: { name: string }; Body: { publicKey: string } }>('/api/v1/identities/:name/keys', {
    schema: { body: { type: 'object', required: ['publicKey'], additionalProperties: false, properties: {
      publicKey: { type: 'string', minLength: 1, maxLength: 16384 } } } },
  }, async (req, reply) => {
    const identity = await deps.store.getIdentityByName(req.params.name);
    if (!identity) throw new UserError(`identity "${req.params.name}" does not exist`, 404);
    let key;
    try {
      key = parsePublicKeyLine(req.body.publicKey);
    } catch (err) {
      throw new UserError((err as Error).message);
    }
    const existing = await deps.store.getPublicKeyByFingerprint(key.fingerprint);
    if (existing) {
      const owner = await deps.store.getIdentity(existing.identityId);
      throw new UserError(`key ${key.fingerprint} is already registered to ${owner?.name ?? 'another identity'}`, 409);
    }
    const record: PublicKeyRecord = { id: newId('key'), identityId: identity.id, fingerprint: key.fingerprint, publicKey: key.line, createdAt: Date.now() };
    await deps.store.addPublicKey(record);
    return reply.code(201).send(publicKeyView(record, identity.name));
  });

  app.get<{ Querystring: { identity?: string } }>('/api/v1/keys', async (req) => {
    const names = new Map((await deps.store.listIdentities()).map((i) => [i.id, i.name]));
    let identityId: string | undefined;
    if (req.query.identity) {
      identityId = (await deps.store.getIdentityByName(req.query.identity))?.id;
      if (!identityId) throw new UserError(`identity "${req.query.identity}" does not exist`, 404);
    }
    return (await deps.store.listPublicKeys(identityId)).map((k) => publicKeyView(k, names.get(k.identityId) ?? '?'));
  });

  app.delete<{ Params: { fingerprint: string } }>('/api/v1/keys/:fingerprint', async (req) => {
    if (!(await deps.store.deletePublicKey(req.params.fingerprint))) throw new UserError(`no key ${req.params.fingerprint}`, 404);
    return { deleted: req.params.fingerprint, endedSessions: (await deps.sessions.accessChanged('key removed')).length };
  });

  app.get('/api/v1/identities', async () => {
    const identities = await deps.store.listIdentities();
    const standing = await deps.identity.access.standing(identities);
    return identities.map((i) => identityView(i, standing.get(i.id)));
  });

  app.post<{ Body: { name: string; kind: IdentityKind } }>('/api/v1/identities', {
    schema: { body: { type: 'object', required: ['name', 'kind'], additionalProperties: false, properties: {
      name: { type: 'string', maxLength: 63 }, kind: { type: 'string', enum: [...IDENTITY_KINDS] } } } },
  }, async (req, reply) => {
    const identity = await deps.identity.createIdentity(req.body.name, req.body.kind);
    return reply.code(201).send(identityView(identity));
  });

  app.delete<{ Params: { name: string } }>('/api/v1/identities/:name', async (req) => {
    const identity = await deps.store.getIdentityByName(req.params.name);
    if (!identity) throw new UserError(`identity "${req.params.name}" does not exist`, 404);
    // Only administrators get here: deleting oneself would be an administrator deleting itself.
    if (identity.id === req.identity!.id) throw new UserError('an administrator cannot delete itself', 409);
    await deps.store.deleteIdentity(identity.id);
    return { deleted: identity.name, endedSessions: (await deps.sessions.accessChanged('identity removed')).length };
  });

  app.post<{ Params: { name: string }; Body: { ttlSeconds: number } }>('/api/v1/identities/:name/tokens', {
    schema: { body: { type: 'object', required: ['ttlSeconds'], additionalProperties: false, properties: {
      ttlSeconds: { type: 'integer', minimum: 1, maximum: MAX_TOKEN_TTL_S } } } },
  }, async (req, reply) => {
    const identity = await deps.store.getIdentityByName(req.params.name);
    if (!identity) throw new UserError(`identity "${req.params.name}" does not exist`, 404);
    const issued = await deps.identity.issueToken(identity, req.body.ttlSeconds);
    return reply.code(201).send({ ...tokenView(issued.record, identity.name, Date.now()), token: issued.token });
  });

  app.get<{ Querystring: { identity?: string } }>('/api/v1/tokens', async (req) => {
    const identities = new Map((await deps.store.listIdentities()).map((i) => [i.id, i.name]));
    let identityId: string | undefined;
    if (req.query.identity) {
      identityId = [...identities].find(([, name]) => name === req.query.identity)?.[0];
      if (!identityId) throw new UserError(`identity "${req.query.identity}" does not exist`, 404);
    }
    const now = Date.now();
    return (await deps.store.listTokens(identityId)).map((t) => tokenView(t, identities.get(t.identityId) ?? '?', now));
  });

  app.post<{ Body: { id?: string; token?: string; identity?: string } }>('/api/v1/tokens/revoke', {
    schema: { body: { type: 'object', additionalProperties: false, properties: {
      id: { type: 'string' }, token: { type: 'string' }, identity: { type: 'string' } } } },
  }, async (req) => {
    const now = Date.now();
    // Open sessions signed in with a revoked token end now (the registry checks them all again).
    const revoked = async (n: number) => ({ revoked: n, endedSessions: n > 0 ? (await deps.sessions.accessChanged('token revoked')).length : 0 });
    if (req.body.token) {
      const record = await deps.store.getTokenByHash(hashToken(req.body.token));
      if (!record || !(await deps.store.revokeToken(record.id, now))) throw new UserError('no active token matches', 404);
      return revoked(1);
    }
    if (req.body.id) {
      if (!(await deps.store.revokeToken(req.body.id, now))) throw new UserError(`no active token with id "${req.body.id}"`, 404);
      return revoked(1);
    }
    if (req.body.identity) {
      const identity = await deps.store.getIdentityByName(req.body.identity);
      if (!identity) throw new UserError(`identity "${req.body.identity}" does not exist`, 404);
      return revoked(await deps.store.revokeTokensOf(identity.id, now));
    }
    throw new UserError('give a token id or an identity');
  });
}
