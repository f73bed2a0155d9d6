// The per-session hash chain. Each event's hash covers its position, time, type, exact data
// bytes and the previous event's hash, so editing, removing, inserting or reordering any event
// changes every hash after it. The format is specified in docs/bundle.md.
import { createHash, hash } from 'node:crypto';

export const GENESIS_HASH = '0'.repeat(64);

export interface ChainedEvent { sessionId: string; seq: number; ts: number; type: string; data: string }

/** One-shot hashing: about half the cost of a createHash() object per event on the hot path. */
export function eventHash(e: ChainedEvent, prevHash: string): string {
  return hash('sha256', `gatehouse-event-v1\n${e.sessionId}\n${e.seq}\n${e.ts}\n${e.type}\n${prevHash}\n${e.data}`, 'hex');
}

export function sha256Hex(text: string | Buffer): string {
  return createHash('sha256').update(text).digest('hex');
}
