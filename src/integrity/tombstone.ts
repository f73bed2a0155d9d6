// A tombstone is a seal-log entry saying which sealed sessions were removed, and why (retention).
// The removed sessions' seals stay in the log as its links; the tombstone, signed and chained
// like a seal, turns their absence from a suspicious gap into an explained one.
import { canonicalJson } from './canonical-json.ts';
import { sha256Hex } from './hash-chain.ts';
import type { SigningKey } from './signing-keys.ts';
import type { SealRow } from '../store/types.ts';

export interface RemovedSession { sessionId: string; sealPosition: number; sealHash: string }

export interface TombstonePayload {
  kind: 'gatehouse.tombstone'; v: 1; gatewayId: string; position: number; prevSealHash: string; removed: RemovedSession[]; reason: string; at: number; keyId: string;
}

/** The seals table's session_id of a tombstone (unique across the gateways sharing a store). */
export const tombstoneRowId = (gatewayId: string, position: number): string => `tombstone:${gatewayId}:${position}`;
export const isTombstoneRow = (sessionId: string): boolean => sessionId.startsWith('tombstone:');

export function signTombstone(
  key: SigningKey, gatewayId: string, position: number, prevSealHash: string, removed: RemovedSession[], reason: string, at: number,
): SealRow {
  const payload: TombstonePayload = { kind: 'gatehouse.tombstone', v: 1, gatewayId, position, prevSealHash, removed, reason, at, keyId: key.keyId };
  const text = canonicalJson(payload);
  return { gatewayId, position, sessionId: tombstoneRowId(gatewayId, position), payload: text, hash: sha256Hex(text), keyId: key.keyId, signature: key.sign(text) };
}
