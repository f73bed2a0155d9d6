import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
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
  let fresh = admin === undefined;
  if (!admin) {
    // Gateways sharing a new store may race to create the admin: the loser uses the winner's.
    try {
      admin = await identity.createIdentity(ADMIN_NAME, 'human', true);
    } catch (err) {
      admin = await store.getIdentityByName(ADMIN_NAME);
      if (!admin) throw err;
      fresh = false;
    }
  }
  if (preset !== undefined) {
    const existing = await store.getTokenByHash(hashToken(preset));
    if (!existing) {
      try {
        await identity.issueToken(admin, ADMIN_TOKEN_TTL_S, preset);
      } catch (err) {
        if ((await store.getTokenByHash(hashToken(preset)))?.identityId !== admin.id) throw err; // not just a lost race
      }
    } else if (existing.identityId !== admin.id) {
      throw new Error('GATEHOUSE_ADMIN_TOKEN is already registered to another identity');
    }
    return undefined;
  }
  if (!fresh) return undefined;
  return (await identity.issueToken(admin, ADMIN_TOKEN_TTL_S)).token;
}

/**
 * This gateway's id, created once in its data directory: it names the gateway's own seal log,
 * so gateways that share one store never compete for seal positions.
 */
export function loadGatewayId(dataDir: string): string {
  const file = path.join(dataDir, 'gateway-id');
  if (existsSync(file)) return readFileSync(file, 'utf8').trim();
  const id = `gw_${randomBytes(8).toString('hex')}`;
  writeFileSync(file, id + '\n', { mode: 0o600, flag: 'wx' });
  return id;
}
