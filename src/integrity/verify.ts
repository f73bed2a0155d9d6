// Verification of one session's record — used offline on an exported bundle (`gatehouse verify
// DIR`) and on the store (`gatehouse verify --store`). It reports the first broken link it
// finds, checking in causal order: the event chain, then checkpoints, then the seal.
import { eventHash, GENESIS_HASH, sha256Hex } from './hash-chain.ts';
import { verifySignature } from './signing-keys.ts';
import type { CheckpointPayload, SealPayload } from './payloads.ts';
import { tombstoneRowId, type TombstonePayload } from './tombstone.ts';
import { canonicalJson } from './canonical-json.ts';
import { GAP_EVENT_TYPE, type GapData, type GapPayload } from './gap-marker.ts';

export interface RecordedEvent { seq: number; ts: number; type: string; data: string; hash: string }
export interface SignedCheckpoint { seq: number; payload: string; keyId: string; signature: string }
export interface SignedSeal { gatewayId?: string; position: number; payload: string; hash: string; keyId: string; signature: string }

export interface SessionEvidence {
  sessionId: string;
  events: RecordedEvent[];
  checkpoints: SignedCheckpoint[];
  seal: SignedSeal | null;
  /** Public keys (PEM) by key id that may have signed this record. */
  keys: Map<string, string>;
  /** When set, only these key ids are accepted as signers (the verifier's trust anchor). */
  trustedKeyIds?: Set<string>;
  /** An open session (still recording, or interrupted and not yet sealed) has no seal yet. */
  open?: boolean;
}

export interface VerifyOutcome {
  ok: boolean;
  /** The first broken link, in words a reviewer can act on. */
  problem?: string;
  sealed: boolean;
  events: number;
  checkpoints: number;
  keyIds: string[];
  seal?: SealPayload;
  /**
   * Runs of events the gateway declared lost (signed gap markers; its backlog overflowed while the
   * store was down). A record with a gap is incomplete: ok is false, and problem says which.
   */
  gaps?: Array<{ fromSeq: number; toSeq: number; reason: string }>;
  /** Everything verified but for declared gaps. */
  incomplete?: boolean;
}

class Broken extends Error {}

function fail(message: string): never {
  throw new Broken(message);
}

function checkSignature(ev: SessionEvidence, what: string, payload: string, keyId: string, signature: string): void {
  const pem = ev.keys.get(keyId);
  if (!pem) fail(`${what} is signed by key ${keyId}, which is not in the bundle (unknown key)`);
  if (ev.trustedKeyIds && !ev.trustedKeyIds.has(keyId)) fail(`${what} is signed by key ${keyId}, which is not a trusted key`);
  if (!verifySignature(pem, payload, signature)) fail(`${what}: the signature is invalid (the signed data or the key was changed)`);
}

function parse<T>(text: string, what: string): T {
  try {
    return JSON.parse(text) as T;
  } catch {
    fail(`${what} is not valid JSON`);
  }
}

export function verifySessionEvidence(ev: SessionEvidence): VerifyOutcome {
  const keyIds = new Set<string>();
  const result: VerifyOutcome = { ok: false, sealed: ev.seal !== null, events: ev.events.length, checkpoints: ev.checkpoints.length, keyIds: [] };
  try {
    // 1. The chain: positions without gaps, each hash recomputed from content and predecessor. A
    // signed gap marker stands for the run of positions it declares lost.
    let prev = GENESIS_HASH;
    let position = 0;
    const gaps: GapPayload[] = [];
    const hashAt = new Map<number, string>();
    for (let i = 0; i < ev.events.length; i++) {
      const e = ev.events[i];
      if (e.seq !== position) {
        if (e.seq > position) {
          const later = ev.events.findIndex((x, j) => j > i && x.seq === position);
          if (later >= 0) fail(`event ${position} appears at position ${later} instead of ${i}: events were reordered`);
          fail(`event ${position} is missing: the sequence jumps from ${position - 1} to ${e.seq} (an event was removed)`);
        }
        fail(`event ${e.seq} appears again at position ${i}: events are duplicated or out of order (reordered)`);
      }
      if (e.type === GAP_EVENT_TYPE) {
        const gap = checkGap(ev, e, prev);
        keyIds.add(gap.keyId);
        gaps.push(gap);
        prev = e.hash;
        position = gap.toSeq + 1;
        hashAt.set(gap.toSeq, e.hash);
        continue;
      }
      const expected = eventHash({ sessionId: ev.sessionId, seq: e.seq, ts: e.ts, type: e.type, data: e.data }, prev);
      if (expected !== e.hash) {
        fail(`event ${position} (${e.type}) does not match its recorded hash: its content, time or predecessor was changed (edited, inserted or reordered)`);
      }
      prev = e.hash;
      hashAt.set(position, e.hash);
      position++;
    }
    if (gaps.length > 0) result.gaps = gaps.map((g) => ({ fromSeq: g.fromSeq, toSeq: g.toSeq, reason: g.reason }));

    // 2. Checkpoints: each signed head must be the chain's hash at that position.
    for (const c of [...ev.checkpoints].sort((a, b) => a.seq - b.seq)) {
      const what = `checkpoint at event ${c.seq}`;
      checkSignature(ev, what, c.payload, c.keyId, c.signature);
      keyIds.add(c.keyId);
      const p = parse<CheckpointPayload>(c.payload, what);
      if (p.kind !== 'gatehouse.checkpoint' || p.sessionId !== ev.sessionId || p.seq !== c.seq || p.keyId !== c.keyId) {
        fail(`${what} belongs to another session or position`);
      }
      if (c.seq >= position) fail(`${what} is beyond the last event ${position - 1}: events were removed from the end (truncated)`);
      const head = hashAt.get(c.seq);
      if (head === undefined) continue; // inside a declared gap: nothing left to compare with
      if (head !== p.head) {
        fail(`${what} does not match the chain: events up to ${c.seq} were edited, inserted or removed and the chain recomputed`);
      }
    }

    // 3. The seal: signed final head and count, and the session facts it vouches for.
    if (!ev.seal && ev.open) {
      result.keyIds = [...keyIds];
      return declareGaps(result, gaps);
    }
    if (!ev.seal) fail('the session has no seal (it was still open when exported, or its seal was removed)');
    const s = ev.seal;
    checkSignature(ev, 'the seal', s.payload, s.keyId, s.signature);
    keyIds.add(s.keyId);
    if (sha256Hex(s.payload) !== s.hash) fail('the seal hash does not match the seal (the seal log link was altered)');
    const p = parse<SealPayload>(s.payload, 'the seal');
    result.seal = p;
    if (p.kind !== 'gatehouse.seal' || p.sessionId !== ev.sessionId || p.position !== s.position || p.keyId !== s.keyId || (s.gatewayId !== undefined && p.gatewayId !== s.gatewayId)) {
      fail('the seal belongs to another session or seal-log position');
    }
    if (p.eventCount !== position) {
      fail(p.eventCount > position
        ? `the seal covers ${p.eventCount} events but only ${position} are present (events removed from the end: truncated)`
        : `the seal covers ${p.eventCount} events but ${position} are present (events inserted or appended after sealing)`);
    }
    if (p.head !== prev) fail('the seal does not match the last event: the chain was recomputed after sealing (events edited, inserted or removed)');
    result.keyIds = [...keyIds];
    return declareGaps(result, gaps);
  } catch (err) {
    if (!(err instanceof Broken)) throw err;
    result.problem = err.message;
  }
  result.keyIds = [...keyIds];
  return result;
}

/** Everything else verified: complete unless the gateway declared a loss. */
function declareGaps(result: VerifyOutcome, gaps: GapPayload[]): VerifyOutcome {
  if (gaps.length === 0) {
    result.ok = true;
    return result;
  }
  const lost = gaps.reduce((n, g) => n + g.toSeq - g.fromSeq + 1, 0);
  const runs = gaps.map((g) => (g.fromSeq === g.toSeq ? `${g.fromSeq}` : `${g.fromSeq}–${g.toSeq}`)).join(', ');
  result.incomplete = true;
  result.problem = `incomplete: events ${runs} (${lost}) were lost by the gateway, which signed a gap marker for them: ${gaps[0]!.reason}; the rest of the record verifies`;
  return result;
}

/**
 * A gap marker must be signed by a known key, name this session and the position it sits at,
 * begin after the hash the chain has reached, and end with the hash it stands at.
 */
function checkGap(ev: SessionEvidence, e: RecordedEvent, prev: string): GapPayload {
  const what = `the gap marker at event ${e.seq}`;
  const data = parse<GapData>(e.data, what);
  if (typeof data.payload !== 'string' || typeof data.keyId !== 'string' || typeof data.signature !== 'string') fail(`${what} is malformed`);
  checkSignature(ev, what, data.payload, data.keyId, data.signature);
  const p = parse<GapPayload>(data.payload, what);
  if (p.kind !== 'gatehouse.gap' || p.sessionId !== ev.sessionId || p.fromSeq !== e.seq || p.keyId !== data.keyId
    || !Number.isInteger(p.toSeq) || p.toSeq < p.fromSeq || e.ts !== p.firstTs) {
    fail(`${what} belongs to another session or position`);
  }
  if (p.prevHash !== prev) fail(`${what} does not follow the chain: events before it were edited, inserted or removed`);
  if (p.lastHash !== e.hash) fail(`${what} does not match its recorded hash: it was altered`);
  return p;
}

/** The seal's facts that a session description (store row or bundle manifest) must repeat. */
export interface SessionFacts {
  identity: { id: string; name: string; kind: string }; connection: string; protocol: string; clientAddr: string;
  endReason: string | null; eventCount: number; recording?: string;
}

/** Names the first fact in which a session description disagrees with its seal, if any. */
export function compareWithSeal(facts: SessionFacts, seal: SealPayload): string | null {
  const pairs: Array<[string, unknown, unknown]> = [
    ['identity id', facts.identity.id, seal.identity.id], ['identity name', facts.identity.name, seal.identity.name],
    ['identity kind', facts.identity.kind, seal.identity.kind], ['connection', facts.connection, seal.connection],
    ['protocol', facts.protocol, seal.protocol], ['client address', facts.clientAddr, seal.clientAddr],
    ['end reason', facts.endReason, seal.endReason], ['event count', facts.eventCount, seal.eventCount],
  ];
  if (facts.recording !== undefined) pairs.push(['recording mode', facts.recording, seal.recording]);
  for (const [name, described, sealed] of pairs) {
    if (described !== sealed) return `its ${name} (${JSON.stringify(described)}) differs from the sealed one (${JSON.stringify(sealed)})`;
  }
  return null;
}

/**
 * The description of a session a bundle's manifest carries: each field is vouched for by the seal
 * (who, where, when, how it ended) or by the chained `session.start` event (claims, auth method,
 * application_name, target). Nothing else may be in it.
 */
export const DESCRIBED_FIELDS = [
  'id', 'protocol', 'identity', 'authMethod', 'clientAddr', 'applicationName', 'connection', 'target',
  'startedAt', 'endedAt', 'endReason', 'eventCount', 'recording',
] as const;

const isoOfUs = (us: number): string => new Date(Math.floor(us / 1000)).toISOString();

/** What the seal and the session.start event (already verified) say the session was, in the manifest's shape. */
export function vouchedDescription(seal: SealPayload, start: Record<string, unknown>): Record<string, unknown> {
  const identity = (start.identity ?? {}) as { claims?: unknown };
  return {
    id: seal.sessionId, protocol: seal.protocol,
    identity: { id: seal.identity.id, name: seal.identity.name, kind: seal.identity.kind, claims: identity.claims ?? null },
    authMethod: start.authMethod || null, clientAddr: seal.clientAddr, applicationName: start.applicationName ?? null,
    connection: seal.connection, target: start.target ?? null,
    startedAt: isoOfUs(seal.startedAt), endedAt: isoOfUs(seal.endedAt), endReason: seal.endReason, eventCount: seal.eventCount, recording: seal.recording,
  };
}

/** Names the first way the first event is not a session.start that agrees with the seal, if any. */
export function checkStartEvent(events: RecordedEvent[], seal: SealPayload): { start: Record<string, unknown> } | { problem: string } {
  const first = events[0];
  if (!first || first.type !== 'session.start') return { problem: 'the first event is not session.start' };
  let start: Record<string, unknown>;
  try { start = JSON.parse(first.data) as Record<string, unknown>; } catch { return { problem: 'the session.start event is not valid JSON' }; }
  const identity = (start.identity ?? {}) as { id?: unknown; name?: unknown; kind?: unknown };
  const connection = (start.connection ?? {}) as { name?: unknown };
  const pairs: Array<[string, unknown, unknown]> = [
    ['protocol', start.protocol, seal.protocol], ['identity id', identity.id, seal.identity.id], ['identity name', identity.name, seal.identity.name],
    ['identity kind', identity.kind, seal.identity.kind], ['connection', connection.name, seal.connection], ['client address', start.clientAddr, seal.clientAddr],
  ];
  if (start.recording !== undefined) pairs.push(['recording mode', start.recording, seal.recording]);
  if (first.ts !== seal.startedAt) return { problem: `the session.start event's time differs from the sealed start time` };
  for (const [name, started, sealed] of pairs) {
    if (started !== sealed) return { problem: `the session.start event's ${name} (${JSON.stringify(started)}) differs from the sealed one (${JSON.stringify(sealed)})` };
  }
  return { start };
}

/** Names the first field of a manifest's session description that nothing signed vouches for, or that differs, if any. */
export function compareDescription(described: Record<string, unknown>, vouched: Record<string, unknown>): string | null {
  for (const name of Object.keys(described)) {
    if (!(DESCRIBED_FIELDS as readonly string[]).includes(name)) return `its field ${JSON.stringify(name)} is vouched for by neither the seal nor the session.start event`;
  }
  for (const name of DESCRIBED_FIELDS) {
    if (!(name in described)) return `it lacks the field ${name}`;
    if (canonicalJson(described[name]) !== canonicalJson(vouched[name])) {
      return `its ${name} (${JSON.stringify(described[name])}) differs from the recorded one (${JSON.stringify(vouched[name])})`;
    }
  }
  return null;
}

export interface SealLogEntry { gatewayId: string; position: number; sessionId: string; payload: string; hash: string; keyId: string; signature: string }

/**
 * The gateway-wide seal log: positions 1..n without gaps, each linking the previous seal's
 * hash, each signed. A deleted or reordered session breaks it as an edited event breaks a chain.
 */
export function verifySealLog(entries: SealLogEntry[], keys: Map<string, string>, trustedKeyIds?: Set<string>): string | null {
  let prev = GENESIS_HASH;
  for (let i = 0; i < entries.length; i++) {
    const e = entries[i];
    if (e.position !== i + 1) return `seal log position ${i + 1} is missing: the log jumps to ${e.position} (a sealed session was removed from the log)`;
    const pem = keys.get(e.keyId);
    if (!pem) return `seal log position ${e.position} is signed by unknown key ${e.keyId}`;
    if (trustedKeyIds && !trustedKeyIds.has(e.keyId)) return `seal log position ${e.position} is signed by key ${e.keyId}, which is not a trusted key`;
    if (!verifySignature(pem, e.payload, e.signature)) return `seal log position ${e.position}: the signature is invalid`;
    if (sha256Hex(e.payload) !== e.hash) return `seal log position ${e.position}: the hash does not match the seal`;
    let p: SealPayload | TombstonePayload;
    try { p = JSON.parse(e.payload) as SealPayload | TombstonePayload; } catch { return `seal log position ${e.position} is not valid JSON`; }
    const rowId = p.kind === 'gatehouse.tombstone' ? tombstoneRowId(p.gatewayId, p.position) : p.sessionId;
    if (p.position !== e.position || rowId !== e.sessionId || p.gatewayId !== e.gatewayId) return `seal log position ${e.position} does not say what its row says (moved or reordered)`;
    if (p.prevSealHash !== prev) return `seal log position ${e.position} does not link to position ${e.position - 1} (seals removed, inserted or reordered)`;
    prev = e.hash;
  }
  return null;
}
