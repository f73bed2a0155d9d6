import type { Logger } from 'pino';
import { hashToken, looksLikeToken } from '../crypto/tokens.ts';
import type { IdentityService } from '../identity/identity-service.ts';
import type { Store } from '../store/types.ts';
import { nowUs } from '../util/ids.ts';

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

/** Sessions left open by a gateway that died get an end record saying so. */
export async function sealInterruptedSessions(store: Store, log: Logger): Promise<number> {
  const open = await store.listOpenSessions();
  for (const s of open) {
    const events = await store.listEvents(s.id);
    const seq = events.length === 0 ? 0 : events[events.length - 1].seq + 1;
    const ts = nowUs();
    const reason = 'interrupted: the gateway stopped before the session ended';
    await store.writeBatch({
      sessionsStarted: [],
      events: [{ sessionId: s.id, seq, ts, type: 'session.end', data: JSON.stringify({ reason }) }],
      sessionsEnded: [{ sessionId: s.id, endedAt: ts, endReason: reason, eventCount: seq + 1 }],
    });
  }
  if (open.length > 0) log.warn({ sessions: open.length }, 'sealed sessions interrupted by an earlier stop');
  return open.length;
}
