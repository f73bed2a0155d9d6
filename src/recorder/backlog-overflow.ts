// What the recorder keeps when its backlog of unwritten events overflows (the store has been down
// too long for the memory it may use): every session row, end, seal and tombstone (small, and the
// seal log must stay whole), each session's first retained event, and, in place of the rest of
// its events, one signed gap marker covering them. Memory is then bounded by the number of
// sessions, and the chain that reaches the store has no hole nobody declared.
import { GAP_EVENT_TYPE, gapPayloadOf, signGap } from '../integrity/gap-marker.ts';
import type { SigningKey } from '../integrity/signing-keys.ts';
import type { EventRow, RecordBatch } from '../store/types.ts';

export interface Compacted {
  batch: RecordBatch;
  /** Events dropped (not counting those an earlier gap marker already stood for). */
  dropped: number;
  /** Sessions with a gap marker now. */
  sessions: number;
}

export function compactToGaps(batch: RecordBatch, key: SigningKey | null, reason: string): Compacted {
  const bySession = new Map<string, EventRow[]>();
  for (const e of batch.events) {
    let list = bySession.get(e.sessionId);
    if (!list) bySession.set(e.sessionId, list = []);
    list.push(e);
  }
  const events: EventRow[] = [];
  const lostRanges = new Map<string, [number, number]>();
  let dropped = 0;
  for (const [sessionId, list] of bySession) {
    // A session's retained events are in order: its first event (kept whole, so the gap links to
    // a known hash), possibly a gap marker from an earlier overflow, then newer events.
    const keepFirst = list[0]!.type !== GAP_EVENT_TYPE;
    if (keepFirst) events.push(list[0]!);
    const rest = keepFirst ? list.slice(1) : list;
    if (rest.length === 0) continue;
    const earlier = rest[0]!.type === GAP_EVENT_TYPE ? gapPayloadOf(rest[0]!) : null;
    const last = rest[rest.length - 1]!;
    const lastTs = last.type === GAP_EVENT_TYPE ? gapPayloadOf(last).lastTs : last.ts;
    const fromSeq = earlier ? earlier.fromSeq : rest[0]!.seq;
    const toSeq = last.type === GAP_EVENT_TYPE ? gapPayloadOf(last).toSeq : last.seq;
    dropped += rest.filter((e) => e.type !== GAP_EVENT_TYPE).length;
    events.push(signGap(key, {
      sessionId, fromSeq, toSeq,
      prevHash: earlier ? earlier.prevHash : list[0]!.hash,
      lastHash: last.hash, firstTs: earlier ? earlier.firstTs : rest[0]!.ts, lastTs, reason,
    }));
    lostRanges.set(sessionId, [fromSeq, toSeq]);
  }
  // A checkpoint inside a lost run signs a head no reader can check: it goes with the run.
  const checkpoints = batch.checkpoints.filter((c) => {
    const range = lostRanges.get(c.sessionId);
    return !range || c.seq < range[0] || c.seq > range[1];
  });
  return { batch: { ...batch, events, checkpoints }, dropped, sessions: lostRanges.size };
}
