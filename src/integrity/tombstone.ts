// A tombstone is a seal-log entry saying which sealed sessions were removed, and why (retention).
// The removed sessions' seals stay in the log as its links; the tombstone, signed and chained
// like a seal, turns their absence from a suspicious gap into an explained one.
import { canonicalJson } from './canonical-json.ts';
import { sha256Hex } from './hash-chain.ts';
import type { SigningKey } from './signing-keys.ts';
import type { SealRow } from '../store/types.ts';

export interface RemovedSession { sessionId: string; sealPosition: number; sealHash: string }

export interface TombstonePayload {
  kind: 'gatehouse.tombstone'; v: 1; position: number; prevSealHash: string; removed: RemovedSession[]; reason: string; at: number; keyId: string;
}

export const tombstoneRowId = (position: number): string => `tombstone:${position}`;

export function signTombstone(key: SigningKey, position: number, prevSealHash: string, removed: RemovedSession[], reason: string, at: number): SealRow {
  const payload: TombstonePayload = { kind: 'gatehouse.tombstone', v: 1, position, prevSealHash, removed, reason, at, keyId: key.keyId };
  const text = canonicalJson(payload);
  return { position, sessionId: tombstoneRowId(position), payload: text, hash: sha256Hex(text), keyId: key.keyId, signature: key.sign(text) };
}
