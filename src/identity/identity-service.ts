import { generateToken, hashToken } from '../crypto/tokens.ts';
import type { Decision } from '../access/access-policy.ts';
import { newId } from '../util/ids.ts';
import type { Connection, Identity, IdentityKind, Store, TokenRecord } from '../store/types.ts';
import { AccessService } from '../access/access-service.ts';

export type TokenCheck =
  | { ok: true; identity: Identity; token: TokenRecord }
  | { ok: false; reason: 'unknown' | 'expired' | 'revoked' };

export interface IssuedToken { token: string; record: TokenRecord }

/** Who is calling: identities and their short-lived tokens; what they may do is asked of `access`. */
export class IdentityService {
  private readonly store: Store;
  private readonly now: () => number;
  /** The shared access stage (default deny), so that every engine holding this service decides alike. */
  readonly access: AccessService;

  constructor(store: Store, now: () => number = Date.now) {
    this.store = store;
    this.now = now;
    this.access = new AccessService(store);
  }

  async createIdentity(name: string, kind: IdentityKind, isAdmin = false, workload?: Pick<Identity, 'claims' | 'authSource' | 'externalGroups'>): Promise<Identity> {
    if (!/^[A-Za-z0-9][A-Za-z0-9._@-]{0,62}$/.test(name)) {
      throw new UserError(`invalid identity name "${name}" (letters, digits, . _ @ -; at most 63 characters)`);
    }
    if (await this.store.getIdentityByName(name)) throw new UserError(`identity "${name}" already exists`, 409);
    const identity: Identity = { id: newId('id'), name, kind, isAdmin, createdAt: this.now(), ...workload };
    await this.store.createIdentity(identity);
    return identity;
  }

  async issueToken(identity: Identity, ttlSeconds: number, presetToken?: string): Promise<IssuedToken> {
    const token = presetToken ?? generateToken();
    const createdAt = this.now();
    const record: TokenRecord = {
      id: newId('tok'), identityId: identity.id, tokenHash: hashToken(token), createdAt,
      expiresAt: createdAt + ttlSeconds * 1000, revokedAt: null,
    };
    await this.store.createToken(record);
    return { token, record };
  }

  async checkToken(token: string): Promise<TokenCheck> {
    const record = await this.store.getTokenByHash(hashToken(token));
    if (!record) return { ok: false, reason: 'unknown' };
    if (record.revokedAt !== null) return { ok: false, reason: 'revoked' };
    if (record.expiresAt <= this.now()) return { ok: false, reason: 'expired' };
    const identity = await this.store.getIdentity(record.identityId);
    if (!identity) return { ok: false, reason: 'unknown' };
    return { ok: true, identity, token: record };
  }

  /** Default deny: an identity may connect only where a connect grant (its own or a group's) says so. */
  async mayConnect(identity: Identity, connection: Connection): Promise<boolean> {
    return this.access.mayConnect(identity, connection);
  }

  /** The connect decision with its reason and the grant behind it, for the session's record. */
  async decideConnect(identity: Identity, connection: Connection): Promise<Decision> {
    return this.access.check(identity, 'connect', connection);
  }
}

/** An error whose message is safe and meant for the caller (API 4xx, CLI output). */
export class UserError extends Error {
  readonly status: number;
  constructor(message: string, status = 400) {
    super(message);
    this.status = status;
  }
}
