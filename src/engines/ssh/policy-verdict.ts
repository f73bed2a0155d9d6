// The SSH engine's side of the policy stage (src/policy/): it asks, it never decides. A verdict
// becomes SSH behaviour here — deny and hold refuse (approvals are not built yet, so a hold is
// refused with the same words the PostgreSQL relay uses), allow and audit let the action through —
// and every event about a decided action carries the verdict.
import type { SessionPolicy } from '../../policy/policy-service.ts';
import { moreRestrictive, type FileOp, type PolicyAction, type Verdict } from '../../policy/types.ts';

/** The verdict on `action`, with a hold turned into a refusal until approvals exist. */
export function decide(policy: SessionPolicy, action: PolicyAction): Verdict {
  const verdict = policy.decide(action);
  if (verdict.decision !== 'hold') return verdict;
  return { ...verdict, decision: 'deny', reason: `${verdict.reason}; holding for approval is not available on this gateway yet, so it is refused` };
}

/**
 * One file request may be several mutations at once (an SFTP open with WRITE|CREAT|TRUNC writes,
 * may create and truncates): each is asked about, and the most restrictive verdict wins.
 */
export function decideFile(policy: SessionPolicy, ops: readonly FileOp[], path: string, toPath?: string): Verdict {
  let worst: Verdict | null = null;
  for (const op of ops) {
    const v = decide(policy, { kind: 'file', op, path, ...(toPath !== undefined ? { toPath } : {}) });
    if (worst === null || (moreRestrictive(worst.decision, v.decision) !== worst.decision) || (v.decision === worst.decision && worst.rule === null && v.rule !== null)) worst = v;
  }
  return worst!;
}

/** How the file trackers (SFTP, scp) ask the policy about a change and answer the client themselves. */
export interface FilePolicy {
  /** The verdict on one request (its mutations, e.g. write + create + truncate); null: no rule could apply. */
  decide(ops: readonly FileOp[], path: string, toPath?: string): Verdict | null;
  /**
   * A change the gateway cannot place (a relative path whose base it does not know): a deny
   * naming why when file rules could apply, else null — never allowed on a guess.
   */
  unreadable(why: string): Verdict | null;
  /** Writes bytes to the client's side of the channel (at a boundary of its protocol). */
  toClient(bytes: Buffer): void;
}

/** An absolute path for the policy: `p` as is when absolute, else against `base` (null: cannot tell). */
export function absolutePath(p: string, base: string | null): string | null {
  if (p.startsWith('/')) return p;
  return base !== null && base.startsWith('/') ? `${base.replace(/\/+$/, '')}/${p}` : null;
}

export function refuses(v: Verdict): boolean {
  return v.decision === 'deny' || v.decision === 'hold';
}

/** What an event says about the verdict: nothing when no rule applied (as PostgreSQL statement events do). */
export function policyField(verdict: Verdict | null | undefined): { policy?: { decision: string; rule: string | null; version: number; reason: string } } {
  if (!verdict || (verdict.rule === null && verdict.decision === 'allow')) return {};
  return { policy: { decision: verdict.decision, rule: verdict.rule, version: verdict.policyVersion, reason: verdict.reason } };
}
