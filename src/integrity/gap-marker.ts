// A signed gap marker: the gateway's own statement that a run of a session's events was lost
// (its in-memory backlog overflowed while the store could not write) and which chain hashes the
// lost run began after and ended with. It takes the place of the lost events in the chain — one
// row at the first lost position, whose hash is the last lost event's hash — so the events after
// it still link, and a verifier can tell a loss the gateway declared from events someone removed.
// Format: docs/bundle.md.
import { canonicalJson } from './canonical-json.ts';
import type { SigningKey } from './signing-keys.ts';
import type { EventRow } from '../store/types.ts';

export const GAP_EVENT_TYPE = 'recording.gap';

export interface GapPayload {
  kind: 'gatehouse.gap'; v: 1; sessionId: string;
  /** First and last lost position (inclusive). */
  fromSeq: number; toSeq: number;
  /** Chain hash of the event before fromSeq, and of the event at toSeq. */
  prevHash: string; lastHash: string;
  /** Times of the first and last lost event (µs). */
  firstTs: number; lastTs: number;
  reason: string; keyId: string;
}

/** What a gap row's data holds: the signed payload text and its signature. */
export interface GapData { payload: string; keyId: string; signature: string }

export function signGap(key: SigningKey | null, fields: Omit<GapPayload, 'kind' | 'v' | 'keyId'>): EventRow {
  const payload: GapPayload = { kind: 'gatehouse.gap', v: 1, ...fields, keyId: key?.keyId ?? '' };
  const text = canonicalJson(payload);
  const data: GapData = { payload: text, keyId: payload.keyId, signature: key ? key.sign(text) : '' };
  return { sessionId: fields.sessionId, seq: fields.fromSeq, ts: fields.firstTs, type: GAP_EVENT_TYPE, data: JSON.stringify(data), hash: fields.lastHash };
}

/** The payload of a gap row (unverified: verify.ts checks the signature). */
export function gapPayloadOf(row: Pick<EventRow, 'data'>): GapPayload {
  return JSON.parse((JSON.parse(row.data) as GapData).payload) as GapPayload;
}

/** The position after an event row: a gap row stands for every position it covers. */
export function positionAfter(row: Pick<EventRow, 'seq' | 'type' | 'data'>): number {
  return row.type === GAP_EVENT_TYPE ? gapPayloadOf(row).toSeq + 1 : row.seq + 1;
}
