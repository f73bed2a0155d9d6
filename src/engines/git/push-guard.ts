// Deciding a push: given the commands and the pushed pack's commits (when the pack was needed),
// decide each ref update, classify it for the record, and build the report the client sees when
// the gateway refuses. push-hold.ts runs it for both transports (SSH and smart HTTP).
import { buildReportStatus, type RefUpdate, type ReportStatus } from './receive-pack.ts';
import { readPackCommits } from './pack.ts';
import type { ObjectFormat } from './refs.ts';
import { decideFastForward, type AskTarget, type FastForwardDecision } from './fast-forward.ts';
import { checkProtection, needsFastForwardCheck, protectingGlob } from './protected-refs.ts';

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
}

/** Whether any command needs the pack inspected before the push may be forwarded. */
export function needsPackBeforeForward(updates: RefUpdate[], protect: string[]): boolean {
  return updates.some((u) => needsFastForwardCheck(u, protect));
}

/**
 * Decides every command. `commits` are the pushed pack's commits (null when the pack was not
 * inspected, with `problem` saying why; an empty map when no pack was needed); `askTarget` reaches
 * the target's history for commits the pack leaves out. Updates of protected refs are refused
 * unless proven fast-forward; others are only classified.
 */
export async function decideRefUpdates(updates: RefUpdate[], commits: Map<string, string[]> | null, protect: string[], askTarget?: AskTarget,
  problem?: string): Promise<RecordedUpdate[]> {
  if (commits === null && !problem) commits = new Map();
  const out: RecordedUpdate[] = [];
  for (const u of updates) {
    const glob = protectingGlob(u.ref, protect);
    let decision: FastForwardDecision | null = null;
    if (u.kind === 'update' && commits) {
      decision = await decideFastForward(u, commits, glob ? askTarget : undefined).catch((err: Error) => ({ fastForward: false, method: 'target' as const, detail: `could not be decided: ${err.message}` }));
    }
    // A rewrite is proven when the whole history was seen without the old tip; an unproven
    // update stays unknown (and, on a protected ref, is refused as unverified).
    const cls: UpdateClass = u.kind === 'create' ? 'create' : u.kind === 'delete' ? 'delete'
      : decision?.fastForward ? 'fast-forward' : decision && /does not contain/.test(decision.detail) ? 'rewrite' : 'unknown';
    const verdict = checkProtection(u, protect, cls === 'fast-forward' ? true : cls === 'rewrite' ? false : undefined);
    out.push({
      ref: u.ref, old: u.oldId, new: u.newId, class: cls,
      evidence: u.kind !== 'update' ? u.kind : decision ? `${decision.method}: ${decision.detail}` : problem ?? 'not inspected',
      ...(glob ? { protectedBy: glob } : {}), allowed: verdict.allowed, ...(verdict.reason ? { reason: verdict.reason } : {}),
    });
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

// ── Legacy whole-pack API ─────────────────────────────────────────────────────
// Kept only until src/engines/git-http/engine.ts moves to HeldPush (push-hold.ts); it holds the
// whole pack in memory and inflates it synchronously. Do not use in new code.

/** Largest pack the gateway buffers to decide a protected update; bigger pushes are refused. */
export const MAX_GUARDED_PACK_BYTES = 512 * 1024 * 1024;
/** Largest pack copied aside (while streaming) to classify unprotected updates for the record. */
export const MAX_CLASSIFIED_PACK_BYTES = 64 * 1024 * 1024;

/** @deprecated use decideRefUpdates with a PackInspector's commits (push-hold.ts). */
export async function decideUpdates(updates: RefUpdate[], pack: Buffer | null, format: ObjectFormat, protect: string[], askTarget?: AskTarget,
  packProblem?: string): Promise<RecordedUpdate[]> {
  let commits: Map<string, string[]> | null = null;
  let problem = packProblem;
  if (pack && pack.length > 0) {
    try {
      commits = readPackCommits(pack, format).commits;
    } catch (err) {
      problem = `the pushed pack could not be read: ${(err as Error).message}`;
    }
  }
  return decideRefUpdates(updates, commits, protect, askTarget, problem);
}

/**
 * A bounded copy of a pack as it passes: every byte is counted, and the bytes are kept while
 * there are at most `limit` of them (copied: the transport may reuse its buffers).
 */
export class PackCopy {
  bytes = 0;
  limit: number;
  private chunks: Buffer[] = [];
  private kept = true;

  constructor(limit = MAX_CLASSIFIED_PACK_BYTES) {
    this.limit = limit;
  }

  add(chunk: Buffer): void {
    this.bytes += chunk.length;
    if (!this.kept) return;
    if (this.bytes > this.limit) {
      this.kept = false;
      this.chunks = [];
      return;
    }
    this.chunks.push(Buffer.from(chunk));
  }

  /** From now on only count (a refused push is drained, never inspected). */
  countOnly(): void {
    this.kept = false;
    this.chunks = [];
  }

  /** The pack, or null when it outgrew the limit. */
  pack(): Buffer | null {
    return this.kept ? Buffer.concat(this.chunks, this.bytes) : null;
  }

  /** Why pack() is null, for the record. */
  get problem(): string | undefined {
    return this.kept ? undefined : `the pack is larger than ${this.limit} bytes, too large to verify`;
  }
}

/**
 * `git.push.result` data of a push that was forwarded: each update classified from the copy of
 * the pack kept aside (or as decided before forwarding, when none was kept), and the target's report.
 */
export async function forwardedPushResult(updates: RefUpdate[], copy: PackCopy, format: ObjectFormat, decided: RecordedUpdate[],
  report: ReportStatus | null): Promise<Record<string, unknown>> {
  const pack = copy.bytes > 0 ? copy.pack() : null;
  const classified = pack ? await decideUpdates(updates, pack, format, []) : decided;
  return {
    refusedByGateway: false, packBytes: copy.bytes,
    updates: classified.map((u) => ({ ref: u.ref, old: u.old, new: u.new, class: u.class, evidence: u.evidence })),
    unpack: report?.unpack ?? null, refs: report?.refs ?? null,
  };
}
