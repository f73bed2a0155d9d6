// A session's side of holding for approval, shared by every engine: an action a rule holds becomes
// a stored request (approval-service.ts), its request and its decision become events in the
// session's chain (`policy.hold`, `policy.decision`), and every request the session still waits
// on is withdrawn when the session or its channel goes away. An engine only says how its client
// is told and what happens to the action; the words for each outcome are the same everywhere.
import type { ApprovalService, Hold, HoldOutcome } from './approval-service.ts';
import type { PolicyAction, Verdict } from '../policy/types.ts';
import type { Identity } from '../store/types.ts';

/** The recording calls a hold makes (a SessionRecording). */
export interface HoldRecorder {
  readonly id: string;
  append(type: string, data: unknown): void;
}

export interface HoldParties {
  requester: Pick<Identity, 'id' | 'name' | 'kind' | 'claims'>;
  connection: { id: string; name: string };
  protocol: string;
}

export class SessionHolds {
  private readonly approvals: ApprovalService;
  private readonly rec: HoldRecorder;
  private readonly parties: HoldParties;
  private readonly waiting = new Set<Hold>();

  constructor(approvals: ApprovalService, rec: HoldRecorder, parties: HoldParties) {
    this.approvals = approvals;
    this.rec = rec;
    this.parties = parties;
  }

  /**
   * Stores the request and returns at once; `outcome` settles when people decide, it expires or it
   * is withdrawn, after the decision is in the recording. `extra` goes into the policy.hold event
   * (e.g. the SSH channel number).
   */
  hold(verdict: Verdict, action: PolicyAction, extra: Record<string, unknown> = {}): Hold {
    const hold = this.approvals.hold({ sessionId: this.rec.id, ...this.parties, verdict, action });
    this.waiting.add(hold);
    this.rec.append('policy.hold', {
      ...extra, request: hold.id, rule: verdict.rule, version: verdict.policyVersion, expiresAt: new Date(hold.expiresAt).toISOString(),
    });
    const outcome = hold.outcome.then((o) => {
      this.waiting.delete(hold);
      this.rec.append('policy.decision', { ...extra, request: hold.id, ...o });
      return o;
    });
    return { ...hold, outcome };
  }

  /** The session (or the channel its requests belong to) ended: nothing it waits on may run later. */
  withdrawAll(reason: string, which?: (hold: Hold) => boolean): void {
    for (const h of [...this.waiting]) if (!which || which(h)) h.withdraw(reason);
  }

  get pending(): number {
    return this.waiting.size;
  }
}

/** What the client is told while its action waits (one line, no control characters of the client's). */
export function holdNotice(what: string, hold: Pick<Hold, 'id' | 'expiresAt'>, verdict: Verdict): string {
  return `gatehouse: this ${what} is held for approval: ${verdict.reason}; request ${hold.id}. An approver runs: gatehouse approvals approve ${hold.id} (it is refused if not decided by ${new Date(hold.expiresAt).toISOString()})`;
}

/** Why a held action was not run, in words for the client (null: approved, it runs). */
export function heldRefusal(what: string, hold: Pick<Hold, 'id'>, outcome: HoldOutcome): string | null {
  switch (outcome.kind) {
    case 'approved': return null;
    case 'denied': return `gatehouse: denied by ${outcome.by}: ${outcome.reason || 'no reason given'} (approval request ${hold.id}); the ${what} was not run`;
    case 'expired': return `gatehouse: approval request ${hold.id} was not decided within ${Math.round(outcome.afterMs / 1000)}s; the ${what} was not run`;
    case 'withdrawn': return `gatehouse: approval request ${hold.id} was withdrawn (${outcome.reason}); the ${what} was not run`;
    case 'failed': return `gatehouse: ${outcome.reason}, so the ${what} was not run`;
  }
}

/** The verdict an action runs or is refused under once its hold is over (the record keeps both). */
export function verdictAfterHold(verdict: Verdict, hold: Pick<Hold, 'id'>, outcome: HoldOutcome, what: string): Verdict {
  const refusal = heldRefusal(what, hold, outcome);
  if (refusal === null) return { ...verdict, decision: 'allow', reason: `${verdict.reason}; approved by ${(outcome as { by: string[] }).by.join(', ')} (request ${hold.id})` };
  return { ...verdict, decision: 'deny', reason: refusal.replace(/^gatehouse: /, '') };
}
