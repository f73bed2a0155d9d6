// `gatehouse verify --store`: every session's chain, checkpoints and seal, and the seal log.
import type { Store } from '../store/types.ts';
import { verifySealLog, verifySessionEvidence } from './verify.ts';

export interface StoreVerification {
  sessions: number;
  sealed: number;
  open: number;
  seals: number;
  problems: string[];
}

export async function verifyStore(store: Store, trustedKeyIds?: Set<string>): Promise<StoreVerification> {
  const keys = new Map((await store.listSigningKeys()).map((k) => [k.keyId, k.publicKeyPem]));
  const sessions = await store.listSessions({ limit: Number.MAX_SAFE_INTEGER });
  const seals = await store.listSeals();
  const out: StoreVerification = { sessions: sessions.length, sealed: 0, open: 0, seals: seals.length, problems: [] };

  const logProblem = verifySealLog(seals, keys, trustedKeyIds);
  if (logProblem) out.problems.push(logProblem);
  const known = new Set(sessions.map((s) => s.id));
  for (const seal of seals) {
    if (!known.has(seal.sessionId)) out.problems.push(`session ${seal.sessionId} (seal log position ${seal.position}) is missing from the store: it was deleted`);
  }
  for (const s of sessions.sort((a, b) => a.startedAt - b.startedAt)) {
    if (s.endedAt === null) { out.open++; continue; }
    const [events, checkpoints, seal] = await Promise.all([store.listEvents(s.id), store.listCheckpoints(s.id), store.getSeal(s.id)]);
    const r = verifySessionEvidence({ sessionId: s.id, events, checkpoints, seal: seal ?? null, keys, trustedKeyIds });
    if (r.ok) out.sealed++;
    else out.problems.push(`session ${s.id}: ${r.problem}`);
  }
  return out;
}
