// Signed payloads: checkpoints (a session's chain head at a moment) and seals (a session's
// final head, linked into the gateway-wide seal log). Formats: docs/bundle.md.
import { canonicalJson } from './canonical-json.ts';
import { sha256Hex } from './hash-chain.ts';
import type { SigningKey } from './signing-keys.ts';
import type { CheckpointRow, SealRow, SessionRow } from '../store/types.ts';

export interface CheckpointPayload {
  kind: 'gatehouse.checkpoint'; v: 1; sessionId: string; seq: number; head: string; ts: number; keyId: string;
}

export interface SealPayload {
  kind: 'gatehouse.seal'; v: 1; gatewayId: string; position: number; prevSealHash: string; sessionId: string; protocol: string;
  identity: { id: string; name: string; kind: string }; connection: string; clientAddr: string;
  startedAt: number; endedAt: number; endReason: string; eventCount: number; head: string; keyId: string;
  recording: 'durable' | 'best-effort';
}

export function signCheckpoint(key: SigningKey, sessionId: string, seq: number, head: string, ts: number): CheckpointRow {
  const payload: CheckpointPayload = { kind: 'gatehouse.checkpoint', v: 1, sessionId, seq, head, ts, keyId: key.keyId };
  const text = canonicalJson(payload);
  return { sessionId, seq, payload: text, keyId: key.keyId, signature: key.sign(text) };
}

export function signSeal(
  key: SigningKey, gatewayId: string, position: number, prevSealHash: string, session: SessionRow,
  end: { endedAt: number; endReason: string; eventCount: number; head: string },
): SealRow {
  const payload: SealPayload = {
    kind: 'gatehouse.seal', v: 1, gatewayId, position, prevSealHash, sessionId: session.id, protocol: session.protocol,
    identity: { id: session.identityId, name: session.identityName, kind: session.identityKind },
    connection: session.connectionName, clientAddr: session.clientAddr, startedAt: session.startedAt,
    endedAt: end.endedAt, endReason: end.endReason, eventCount: end.eventCount, head: end.head, keyId: key.keyId,
    recording: session.recordingMode,
  };
  const text = canonicalJson(payload);
  return { gatewayId, position, sessionId: session.id, payload: text, hash: sha256Hex(text), keyId: key.keyId, signature: key.sign(text) };
}
