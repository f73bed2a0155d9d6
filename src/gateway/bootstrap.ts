import { hashToken, looksLikeToken } from '../crypto/tokens.ts';
import type { IdentityService } from '../identity/identity-service.ts';
import type { Store } from '../store/types.ts';

const ADMIN_NAME = 'admin';
const ADMIN_TOKEN_TTL_S = 365 * 86400;

/**
 * First start: create the admin identity and its token. The token is returned once (to be
 * printed) and only its hash is kept. A preset GATEHOUSE_ADMIN_TOKEN is registered instead.
 */
export async function bootstrapAdmin(store: Store, identity: IdentityService, preset: string | undefined): Promise<string | undefined> {
  if (preset !== undefined && !looksLikeToken(preset)) {
    throw new Error('GATEHOUSE_ADMIN_TOKEN must look like a Gatehouse token (ght_ followed by at least 40 characters)');
  }
  let admin = await store.getIdentityByName(ADMIN_NAME);
  const fresh = admin === undefined;
  if (!admin) admin = await identity.createIdentity(ADMIN_NAME, 'human', true);
  if (preset !== undefined) {
    const existing = await store.getTokenByHash(hashToken(preset));
    if (!existing) await identity.issueToken(admin, ADMIN_TOKEN_TTL_S, preset);
    else if (existing.identityId !== admin.id) throw new Error('GATEHOUSE_ADMIN_TOKEN is already registered to another identity');
    return undefined;
  }
  if (!fresh) return undefined;
  return (await identity.issueToken(admin, ADMIN_TOKEN_TTL_S)).token;
}
