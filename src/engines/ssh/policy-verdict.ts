// The SSH engine's side of the policy stage (src/policy/): it asks, it never decides. A verdict
// becomes SSH behaviour here and in the channel code — deny refuses, hold waits for people to
// decide (exec requests, shells, lines of shell input; session-holds.ts), allow and audit let the
// action through — and every event about a decided action carries the verdict.
import type { SessionPolicy } from '../../policy/policy-service.ts';
import { moreRestrictive, type FileOp, type PolicyAction, type Verdict } from '../../policy/types.ts';

/** The policy's verdict on `action`, as it is (a hold is for the caller to carry out). */
export function decide(policy: SessionPolicy, action: PolicyAction): Verdict {
  return policy.decide(action);
}

/**
 * File changes are decided inside a pipelined stream (SFTP requests, scp control lines) whose
 * replies must keep their order: they are not held for approval. A hold is refused, saying so.
 */
function decideFileOp(policy: SessionPolicy, action: PolicyAction): Verdict {
  const verdict = policy.decide(action);
  if (verdict.decision !== 'hold') return verdict;
  return { ...verdict, decision: 'deny', reason: `${verdict.reason}; file changes are not held for approval, so it is refused` };
}

/**
 * One file request may be several mutations at once (an SFTP open with WRITE|CREAT|TRUNC writes,
 * may create and truncates): each is asked about, and the most restrictive verdict wins.
 */
export function decideFile(policy: SessionPolicy, ops: readonly FileOp[], path: string, toPath?: string): Verdict {
  let worst: Verdict | null = null;
  for (const op of ops) {
    const v = decideFileOp(policy, { kind: 'file', op, path, ...(toPath !== undefined ? { toPath } : {}) });
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

/** Text for the client's terminal that quotes the client's own input: control characters are shown, not sent. */
export function shownToClient(text: string): string {
  return text.replace(/[\x00-\x08\x0a-\x1f\x7f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

export function refuses(v: Verdict): boolean {
  return v.decision === 'deny' || v.decision === 'hold';
}

/** What an event says about the verdict: nothing when no rule applied (as PostgreSQL statement events do). */
export function policyField(verdict: Verdict | null | undefined): { policy?: { decision: string; rule: string | null; version: number; reason: string } } {
  if (!verdict || (verdict.rule === null && verdict.decision === 'allow')) return {};
  return { policy: { decision: verdict.decision, rule: verdict.rule, version: verdict.policyVersion, reason: verdict.reason } };
}
