// When a statement's record cannot be made durable, the gateway does not send it — and must
// still answer the client the way PostgreSQL would have, so that the client stays connected
// and in step: an error for each simple Query, and for each extended-protocol segment an error
// followed, at its Sync, by ReadyForQuery (the server skips to Sync after an error).
import { Frontend, SqlState } from './codec/protocol.ts';
import { errorResponse, readyForQuery } from './codec/encode.ts';

export const RECORDING_UNAVAILABLE = 'the gateway could not record this statement, so it was not sent to the database';

export interface UnsentReplies {
  replies: Buffer;
  /** The unsent messages stop inside an extended-protocol segment: discard until its Sync. */
  midSegment: boolean;
}

/** Returns null when the unsent messages cannot be answered cleanly (COPY data, Terminate). */
export function repliesForUnsent(types: readonly number[], txStatus: number, alreadyFailedSegment = false): UnsentReplies | null {
  const out: Buffer[] = [];
  const failure = (): Buffer => errorResponse({
    code: SqlState.CannotConnectNow, message: RECORDING_UNAVAILABLE, hint: 'retry when the gateway\'s recording store is available again',
  });
  // After an error, an open transaction is aborted: PostgreSQL reports 'E' until ROLLBACK.
  const status = (): number => (txStatus === 0x49 ? 0x49 : 0x45);
  let inSegment = alreadyFailedSegment;
  for (const t of types) {
    switch (t) {
      case Frontend.Query:
      case Frontend.FunctionCall:
        if (inSegment) continue; // skipped by the server until Sync, as after any error
        out.push(failure(), readyForQuery(status()));
        break;
      case Frontend.Parse: case Frontend.Bind: case Frontend.Describe: case Frontend.Execute: case Frontend.Close: case Frontend.Flush:
        if (!inSegment) { out.push(failure()); inSegment = true; }
        break;
      case Frontend.Sync:
        out.push(readyForQuery(status()));
        inSegment = false;
        break;
      default:
        return null; // CopyData/CopyDone/CopyFail/Terminate: no clean answer
    }
  }
  return { replies: Buffer.concat(out), midSegment: inSegment };
}
