// Deciding a push: given the commands and the pushed pack's commits (when the pack was needed),
// decide each ref update, classify it for the record, and build the report the client sees when
// the gateway refuses. push-hold.ts runs it for both transports (SSH and smart HTTP).
import type { PolicyAction, RefUpdateFacts, Verdict } from '../../policy/types.ts';
import { buildReportStatus, type RefUpdate } from './receive-pack.ts';
import { decideFastForward, type AskTarget, type FastForwardDecision } from './fast-forward.ts';
import { needsFastForwardCheck, protectingGlob } from './protected-refs.ts';
import { CompiledPolicy, PROTECTED_REFS_RULE } from '../../policy/policy.ts';

/** How a ref update is described in a recording. */
export type UpdateClass = 'create' | 'delete' | 'fast-forward' | 'rewrite' | 'unknown';

export interface RecordedUpdate {
  ref: string;
  old: string;
  new: string;
  class: UpdateClass;
  /** How the class was established (pack walk, target probe), or why it could not be. */
  evidence: string;
  /** The protecting glob, when the ref is protected. */
  protectedBy?: string;
  allowed: boolean;
  reason?: string;
  /** A policy rule holds this update for approval (it is allowed only once people approve). */
  held?: boolean;
  /** The policy's verdict on this update, when a rule applied (src/policy/). */
  policy?: { decision: string; rule: string | null; version: number; reason: string };
}

/** The policy's say on a push's ref updates (src/policy/), beside protected refs. */
export interface RefPolicy {
  /** A rule could judge this ref's update by whether it fast-forwards: its pack must be inspected first. */
  caresAboutRef(ref: string): boolean;
  decide(updates: RefUpdateFacts[]): Verdict;
}

/** Whether any command needs the pack inspected before the push may be forwarded. */
export function needsPackBeforeForward(updates: RefUpdate[], protect: string[], policy?: RefPolicy | null): boolean {
  return updates.some((u) => needsFastForwardCheck(u, protect) || (u.kind === 'update' && policy?.caresAboutRef(u.ref) === true));
}

/**
 * Decides every command. `commits` are the pushed pack's commits (null when the pack was not
 * inspected, with `problem` saying why; an empty map when no pack was needed); `askTarget` reaches
 * the target's history for commits the pack leaves out. The policy stage decides (src/policy/):
 * the session's policy, which holds the connection's protected refs as its first rule, or without
 * one the protected refs alone — updates of protected refs are refused unless proven fast-forward.
 */
export async function decideRefUpdates(updates: RefUpdate[], commits: Map<string, string[]> | null, protect: string[], askTarget?: AskTarget,
  problem?: string, policy?: RefPolicy | null): Promise<RecordedUpdate[]> {
  if (commits === null && !problem) commits = new Map();
  const out: RecordedUpdate[] = [];
  for (const u of updates) {
    const glob = protectingGlob(u.ref, protect);
    let decision: FastForwardDecision | null = null;
    if (u.kind === 'update' && commits) {
      decision = await decideFastForward(u, commits, glob || policy?.caresAboutRef(u.ref) ? askTarget : undefined).catch((err: Error) => ({ fastForward: false, method: 'target' as const, detail: `could not be decided: ${err.message}` }));
    }
    // A rewrite is proven when the whole history was seen without the old tip; an unproven
    // update stays unknown (and, on a protected ref, is refused as unverified).
    const cls: UpdateClass = u.kind === 'create' ? 'create' : u.kind === 'delete' ? 'delete'
      : decision?.fastForward ? 'fast-forward' : decision && /does not contain/.test(decision.detail) ? 'rewrite' : 'unknown';
    out.push({
      ref: u.ref, old: u.oldId, new: u.newId, class: cls,
      evidence: u.kind !== 'update' ? u.kind : decision ? `${decision.method}: ${decision.detail}` : problem ?? 'not inspected',
      ...(glob ? { protectedBy: glob } : {}), allowed: true,
    });
  }
  const judge = policy ?? protectionOnly(protect);
  if (judge) {
    const verdict = applyPolicy(out, judge);
    if (out.some((u) => u.held && u.allowed)) holdVerdicts.set(out, verdict);
  }
  // All or nothing: when one command is refused the push is not forwarded, so none applies.
  if (out.some((u) => !u.allowed)) {
    for (const u of out) if (u.allowed) Object.assign(u, { allowed: false, reason: 'not applied: another ref update in this push was refused by gatehouse' });
  }
  return out;
}

/**
 * The report-status a refused push gets (the client prints each as "[remote rejected]", and a
 * failed `unpack` status as "error: remote unpack failed: …").
 */
export function refusalReport(capabilities: string[], decided: RecordedUpdate[], unpack = 'ok'): Buffer {
  return buildReportStatus(capabilities, unpack, decided.map((u) => ({ ref: u.ref, ok: u.allowed, ...(u.allowed ? {} : { reason: u.reason }) })));
}

/** `git.push.result` data of a push the gateway refused (the target saw none of it). */
export function refusedPushResult(decided: RecordedUpdate[], packBytes: number): Record<string, unknown> {
  return { refusedByGateway: true, packBytes, refs: decided.map((u) => ({ ref: u.ref, ok: false, reason: u.reason })) };
}

/** The verdicts of pushes a rule holds (the approval request is made from it: approvers, quorum, timeout). */
const holdVerdicts = new WeakMap<RecordedUpdate[], Verdict>();

/** The verdict holding `decided` for approval, when a rule holds an update and nothing is refused. */
export function holdingVerdict(decided: RecordedUpdate[]): Verdict | null {
  return decided.every((u) => u.allowed) ? holdVerdicts.get(decided) ?? null : null;
}

/** The policy decides each update as classified (a fast-forward not proven counts as a force). */
function applyPolicy(out: RecordedUpdate[], policy: RefPolicy): Verdict {
  const verdict = policy.decide(out.map((u) => ({
    ref: u.ref, kind: u.class === 'create' ? 'create' : u.class === 'delete' ? 'delete' : 'update',
    ...(u.class === 'fast-forward' ? { fastForward: true } : u.class === 'rewrite' ? { fastForward: false } : {}),
  })));
  for (const r of verdict.refs ?? []) {
    const u = out.find((x) => x.ref === r.ref);
    if (!u || (r.rule === null && r.decision === 'allow')) continue;
    u.policy = { decision: r.decision, rule: r.rule, version: verdict.policyVersion, reason: r.reason };
    if (!u.allowed) continue;
    // Protected refs keep the words --protect has always given; other rules say they are the policy's.
    const reason = r.rule === PROTECTED_REFS_RULE ? r.reason : `gatehouse policy: ${r.reason}`;
    if (r.decision === 'hold') {
      u.held = true;
      u.reason = reason;
    } else if (r.decision === 'deny') {
      u.allowed = false;
      u.reason = reason;
    }
  }
  return verdict;
}

/** Protected refs alone, for a push decided without a session's policy (null: nothing protected). */
function protectionOnly(protect: string[]): RefPolicy | null {
  if (protect.length === 0) return null;
  const policy = CompiledPolicy.empty();
  const rules = policy.rulesFor({ identity: '', kind: '', groups: [], claims: null }, { connection: '', type: '', protect });
  return { caresAboutRef: (ref) => policy.caresAboutRef(rules, ref), decide: (updates) => policy.decideIn(rules, { kind: 'git', updates }) };
}

/** A session's policy as a push sees it (null: no policy object, protected refs only). */
export function refPolicyOf(policy: { caresAboutRef(ref: string): boolean; decide(action: PolicyAction): Verdict } | null | undefined): RefPolicy | null {
  if (!policy) return null;
  return { caresAboutRef: (ref) => policy.caresAboutRef(ref), decide: (updates) => policy.decide({ kind: 'git', updates }) };
}
