// `gatehouse verify --store`: every session's chain, checkpoints and seal, the agreement of each
// session row with its seal, the seal log, and the seal log's signed head kept outside the store.
import { verifyAuditLog, type SignedAuditHead } from './audit-chain.ts';
import { createPublicKey } from 'node:crypto';
import type { SessionRow, Store } from '../store/types.ts';
import { keyIdOf, verifySignature } from './signing-keys.ts';
import type { SignedSealLogHead } from './seal-log-anchor.ts';
import { isTombstoneRow, type TombstonePayload } from './tombstone.ts';
import { checkStartEvent, compareDescription, compareWithSeal, verifySealLog, verifySessionEvidence, vouchedDescription, type VerifyOutcome } from './verify.ts';

export interface StoreVerification {
  sessions: number;
  sealed: number;
  open: number;
  seals: number;
  /** Sessions removed by retention, each explained by a tombstone. */
  expired: number;
  /** Entries of the admin audit log, and how many gateways wrote them. */
  auditEntries: number;
  auditGateways: number;
  problems: string[];
}

export interface StoreVerifyOptions {
  /** Only these key ids are accepted as signers (the private key files of the data directory). */
  trustedKeyIds?: Set<string>;
  /** The signed seal-log head from the data directory, if there is one. */
  sealLogHead?: SignedSealLogHead | null;
  /** The signed head of the admin audit log from the data directory, if there is one. */
  auditHead?: SignedAuditHead | null;
}

export async function verifyStore(store: Store, opts: StoreVerifyOptions = {}): Promise<StoreVerification> {
  const { trustedKeyIds } = opts;
  const out: StoreVerification = { sessions: 0, sealed: 0, open: 0, seals: 0, expired: 0, auditEntries: 0, auditGateways: 0, problems: [] };

  const { keys, problems } = await signingKeysOf(store);
  out.problems.push(...problems);

  const sessions = await store.listSessions({ limit: Number.MAX_SAFE_INTEGER });
  const seals = await store.listSeals();
  out.sessions = sessions.length;
  out.seals = seals.length;

  // One seal log per gateway sharing the store; each must be whole.
  const logs = new Map<string, typeof seals>();
  for (const seal of seals) logs.set(seal.gatewayId, [...(logs.get(seal.gatewayId) ?? []), seal]);
  for (const [gatewayId, log] of logs) {
    const logProblem = verifySealLog(log, keys, trustedKeyIds);
    if (logProblem) out.problems.push(logs.size > 1 ? `gateway ${gatewayId}: ${logProblem}` : logProblem);
  }
  if (opts.sealLogHead) {
    const h = opts.sealLogHead;
    const pem = keys.get(h.keyId);
    if (!pem || (trustedKeyIds && !trustedKeyIds.has(h.keyId)) || !verifySignature(pem, h.payload, h.signature)) {
      out.problems.push('the seal log head file is not signed by a trusted gateway key');
    } else {
      const head = JSON.parse(h.payload) as { gatewayId?: string; position: number; hash: string };
      const log = logs.get(head.gatewayId ?? '') ?? [];
      const last = log.length > 0 ? log[log.length - 1].position : 0;
      const atHead = log.find((s) => s.position === head.position);
      if (head.position > last) {
        out.problems.push(`the seal log ends at position ${last} but the gateway sealed up to position ${head.position}: sealed sessions were removed from the end of the log`);
      } else if (!atHead || atHead.hash !== head.hash) {
        out.problems.push(`seal log position ${head.position} is not the seal the gateway wrote there (replaced)`);
      }
    }
  }

  // Sessions removed by retention are named, with their seal, in a signed tombstone of the log.
  const removed = new Map<string, { sealPosition: number; sealHash: string; reason: string }>();
  for (const seal of seals) {
    if (!isTombstoneRow(seal.sessionId)) continue;
    const t = JSON.parse(seal.payload) as TombstonePayload;
    for (const r of t.removed) removed.set(r.sessionId, { sealPosition: r.sealPosition, sealHash: r.sealHash, reason: t.reason });
  }
  const known = new Set(sessions.map((s) => s.id));
  for (const seal of seals) {
    if (isTombstoneRow(seal.sessionId) || known.has(seal.sessionId)) continue;
    const r = removed.get(seal.sessionId);
    if (!r) out.problems.push(`session ${seal.sessionId} (seal log position ${seal.position}) is missing from the store: it was deleted`);
    else if (r.sealPosition !== seal.position || r.sealHash !== seal.hash) out.problems.push(`the tombstone for session ${seal.sessionId} names another seal than the log holds`);
    else out.expired++;
  }
  for (const s of sessions.sort((a, b) => a.startedAt - b.startedAt)) {
    const r = await verifyStoredSession(store, s, keys, trustedKeyIds);
    if (!r.ok) out.problems.push(`session ${s.id}: ${r.problem}`);
    else if (r.open) out.open++;
    else out.sealed++;
  }
  const audit = verifyAuditLog(await store.allAuditEntries(), keys, trustedKeyIds, opts.auditHead);
  out.auditEntries = audit.entries;
  out.auditGateways = audit.gateways;
  out.problems.push(...audit.problems);
  return out;
}

/**
 * The store's signing keys by id. Key ids are derived from the keys themselves: a row that pairs
 * a known id with another key is a forgery attempt, not a key (it is left out, and said so).
 */
export async function signingKeysOf(store: Store): Promise<{ keys: Map<string, string>; problems: string[] }> {
  const keys = new Map<string, string>();
  const problems: string[] = [];
  for (const k of await store.listSigningKeys()) {
    let derived: string;
    try { derived = keyIdOf(createPublicKey(k.publicKeyPem)); } catch { problems.push(`signing key ${k.keyId} in the store is not a public key`); continue; }
    if (derived !== k.keyId) { problems.push(`signing key row ${k.keyId} holds a different key (${derived}): the key table was altered`); continue; }
    keys.set(k.keyId, k.publicKeyPem);
  }
  return { keys, problems };
}

export type StoredSessionVerification =
  | { ok: true; open: boolean; outcome: VerifyOutcome }
  | { ok: false; problem: string; outcome?: VerifyOutcome };

/**
 * One session as the store holds it: its chain, checkpoints and seal, and its row against what the
 * seal and the chained session.start event vouch for (`verify --store` and the console ask this).
 */
export async function verifyStoredSession(store: Store, s: SessionRow, keys: Map<string, string>, trustedKeyIds?: Set<string>): Promise<StoredSessionVerification> {
  const open = s.endedAt === null;
  const [events, checkpoints, seal] = await Promise.all([store.listEvents(s.id), store.listCheckpoints(s.id), store.getSeal(s.id)]);
  const r = verifySessionEvidence({ sessionId: s.id, events, checkpoints, seal: seal ?? null, keys, trustedKeyIds, open: open && !seal });
  if (!r.ok) return { ok: false, problem: r.problem ?? 'the record does not verify', outcome: r };
  if (open) return { ok: true, open: true, outcome: r };
  const mismatch = r.seal ? compareWithSeal({
    identity: { id: s.identityId, name: s.identityName, kind: s.identityKind }, connection: s.connectionName, protocol: s.protocol,
    clientAddr: s.clientAddr, endReason: s.endReason, eventCount: s.eventCount, recording: s.recordingMode,
  }, r.seal) : null;
  if (mismatch) return { ok: false, problem: `the session row was altered: ${mismatch}`, outcome: r };
  if (r.seal && (r.seal.startedAt !== s.startedAt || r.seal.endedAt !== s.endedAt)) {
    return { ok: false, problem: 'the session row was altered: its start or end time differs from the sealed one', outcome: r };
  }
  if (r.seal) {
    // What the seal does not hold (claims, auth method, application_name, target) the chained session.start event does.
    const started = checkStartEvent(events, r.seal);
    if ('problem' in started) return { ok: false, problem: started.problem, outcome: r };
    const iso = (us: number | null) => (us === null ? null : new Date(Math.floor(us / 1000)).toISOString());
    const row = {
      id: s.id, protocol: s.protocol, identity: { id: s.identityId, name: s.identityName, kind: s.identityKind, claims: s.identityClaims ?? null },
      authMethod: s.authMethod || null, clientAddr: s.clientAddr, applicationName: s.applicationName, connection: s.connectionName,
      target: { host: s.targetHost, port: s.targetPort, database: s.targetDatabase, user: s.targetUser },
      startedAt: iso(s.startedAt), endedAt: iso(s.endedAt), endReason: s.endReason, eventCount: s.eventCount, recording: s.recordingMode,
    };
    const differs = compareDescription(row, vouchedDescription(r.seal, started.start));
    if (differs) return { ok: false, problem: `the session row was altered: ${differs}`, outcome: r };
  }
  return { ok: true, open: false, outcome: r };
}
