// One push (git-receive-pack), from the client's first byte to the outcome, for any transport:
// the commands are read (and held); then either
// - no command needs the pack to be decided: an allowed push streams on to the target at once
//   (its pack inspected on the way, for the record only), a refused one is drained and answered;
// - a protected ref is updated: the whole request is spooled to disk (bounded by maxPushBytes)
//   while the pack is inspected as it arrives (pack-stream.ts); once the client's side ends the
//   updates are decided, and the request is replayed to the target from the spool, or refused.
// A push a policy rule holds is spooled the same way and waits, once the client's side has ended,
// for people to decide (src/approvals/): approved, it is replayed; otherwise refused.
// The target sees nothing of a refused push; the client gets the report a Git server would send.
// SSH (src/engines/ssh/git-service.ts) pipes its exec channel through it and smart HTTP
// (src/engines/git-http/engine.ts) the request body: the transport only moves bytes.
import { PassThrough, Writable, type Readable } from 'node:stream';
import { PushRequestReader, type ReportStatus } from './receive-pack.ts';
import { PackInspector, type PackInspection } from './pack-stream.ts';
import { PushSpool } from './push-spool.ts';
import { decideRefUpdates, holdingVerdict, needsPackBeforeForward, refusalReport, refusedPushResult, type RecordedUpdate, type RefPolicy } from './push-guard.ts';
import { heldRefusal, holdNotice } from '../../approvals/session-holds.ts';
import type { Hold } from '../../approvals/approval-service.ts';
import type { PolicyAction, Verdict } from '../../policy/types.ts';
import { capabilityValue, type ObjectFormat } from './refs.ts';
import type { AskTarget } from './fast-forward.ts';
import type { PushLimits } from './push-limits.ts';

/** The recording calls a push makes (a SessionRecording). */
export interface PushRecorder {
  beforeForward(type: string, data: unknown): Promise<void> | undefined | null;
  append(type: string, data: unknown): void;
}

export interface HeldPushOptions {
  protect: string[];
  /** The policy's rules on ref updates (absent: protected refs only). */
  policy?: RefPolicy | null;
  limits: PushLimits;
  rec: PushRecorder;
  /** Fields every git.push / git.push.result record of this push carries ({ ch, repo } or { repo }). */
  recordBase: Record<string, unknown>;
  /** The target's object format, when the client's capabilities do not name one. */
  objectFormat: () => Promise<ObjectFormat> | ObjectFormat;
  /** Asks the target about history the pack leaves out (the fast-forward probe). */
  askTarget?: AskTarget;
  /** Where a push a rule holds waits for approval (absent: a hold is refused). */
  holds?: { hold(verdict: Verdict, action: PolicyAction): Hold } | null;
  /** Tells the waiting client something (a held push's request id), in the transport's own way. */
  notify?: (message: string) => void;
}

export type PushOutcome =
  /** Send `body` to the target (it ends when the client's request has been passed on), relay the answer, then call recordForwarded. */
  | { kind: 'forward'; body: Readable }
  /** Nothing reached the target: answer the client with `report` (already recorded). */
  | { kind: 'refuse'; report: Buffer }
  /** Nothing reached the target, and no report can be given: show `message` and end. */
  | { kind: 'fail'; message: string };

const HIGH_WATER = 1024 * 1024;
const NOT_APPLIED = 'not applied: another ref update in this push was refused by gatehouse';

type Mode = 'commands' | 'streaming' | 'holding' | 'draining' | 'done';

export class HeldPush extends Writable {
  readonly request = new PushRequestReader();
  /** Settles once: as soon as the push is decided (a refusal once the client's bytes have ended). */
  readonly outcome: Promise<PushOutcome>;
  /** Pack bytes the client sent (counted in every mode). */
  packBytes = 0;

  private readonly opts: HeldPushOptions;
  private settle!: (o: PushOutcome) => void;
  private settled = false;
  private mode: Mode = 'commands';
  private held: Buffer[] = [];
  private format: ObjectFormat = 'sha1';
  private inspector: PackInspector | null = null;
  private inspectProblem: string | null = null;
  private spool: PushSpool | null = null;
  private body: PassThrough | null = null;
  private decided: RecordedUpdate[] | null = null;
  private overLimit = false;
  private guarded = false;
  private prefixBytes = 0;
  private aborted = false;
  /** The approval request this push waits on, while it waits. */
  private waitingOn: Hold | null = null;
  /** A held push's request and how it ended, for its git.push record. */
  private heldRecord: { request: string; outcome: string } | null = null;

  constructor(opts: HeldPushOptions) {
    super({ highWaterMark: HIGH_WATER });
    this.opts = opts;
    this.outcome = new Promise((resolve) => { this.settle = resolve; });
  }

  /** The session ended before the push did: free the spool and stop (the outcome, if pending, is a failure). */
  abort(message = 'the push was interrupted'): void {
    if (this.aborted) return;
    this.aborted = true;
    this.waitingOn?.withdraw(message);
    this.inspector?.abandon();
    void this.spool?.remove();
    this.body?.destroy(new Error(message));
    this.finishWith({ kind: 'fail', message });
    this.mode = 'done';
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.take(chunk, cb);
  }

  // Chunks that queued up while the previous ones were processed go on as one (fewer trips to the
  // thread pool for the spool and the inflater).
  override _writev(chunks: Array<{ chunk: Buffer }>, cb: (err?: Error | null) => void): void {
    this.take(chunks.length === 1 ? chunks[0].chunk : Buffer.concat(chunks.map((c) => c.chunk)), cb);
  }

  private take(chunk: Buffer, cb: (err?: Error | null) => void): void {
    // Never an error on the stream: a problem becomes the outcome, and the client is drained.
    this.accept(chunk).then(() => cb(), (err: Error) => { this.fail(`push could not be checked: ${err.message}`); cb(); });
  }

  override _final(cb: (err?: Error | null) => void): void {
    this.clientEnded().then(() => cb(), (err: Error) => { this.fail(`push could not be checked: ${err.message}`); cb(); });
  }

  /**
   * Records the outcome of a forwarded push: each update classified (from the inspection of the
   * held pack, or of the streamed one), and the target's report.
   */
  async recordForwarded(report: ReportStatus | null, extra: Record<string, unknown> = {}): Promise<void> {
    let classified = this.decided ?? [];
    if (!this.guarded && this.inspector && this.packBytes > 0 && this.writableFinished && !this.inspectProblem) {
      const inspection = await this.inspector.end().catch(() => null);
      if (inspection) classified = await decideRefUpdates(this.request.updates, inspection.commits, []);
    }
    this.opts.rec.append('git.push.result', {
      ...this.opts.recordBase, refusedByGateway: false, packBytes: this.packBytes,
      updates: classified.map((u) => ({ ref: u.ref, old: u.old, new: u.new, class: u.class, evidence: u.evidence })),
      unpack: report?.unpack ?? null, refs: report?.refs ?? null, ...extra,
    });
  }

  // ── Client bytes ─────────────────────────────────────────────────────────────

  private async accept(chunk: Buffer): Promise<void> {
    switch (this.mode) {
      case 'commands': return this.commandBytes(chunk);
      case 'streaming': return this.streamBytes(chunk);
      case 'holding': return this.holdBytes(chunk);
      default: this.packBytes += chunk.length; // drained: counted, dropped
    }
  }

  private async commandBytes(chunk: Buffer): Promise<void> {
    this.held.push(chunk);
    try {
      this.request.push(chunk);
    } catch (err) {
      const message = (err as Error).message;
      this.opts.rec.append('git.push.result', { ...this.opts.recordBase, refusedByGateway: true, error: message });
      this.fail(`malformed push request: ${message}`);
      return;
    }
    if (this.request.phase !== 'pack') return;
    const pack = this.request.takePackBytes();
    const held = this.held;
    this.held = [];
    const heldBytes = held.reduce((n, c) => n + c.length, 0);
    const prefix = Buffer.concat(held, heldBytes).subarray(0, heldBytes - pack.reduce((n, c) => n + c.length, 0));
    const fmt = capabilityValue(this.request.capabilities, 'object-format');
    this.format = fmt === 'sha256' || fmt === 'sha1' ? fmt : await this.opts.objectFormat();
    if (this.aborted) return;

    if (needsPackBeforeForward(this.request.updates, this.opts.protect, this.opts.policy)) return this.startHolding(prefix, pack);
    // Nothing needs the pack: decided now, streamed (or drained) from here on.
    this.decided = await decideRefUpdates(this.request.updates, null, this.opts.protect, undefined, 'pack not inspected before forwarding', this.opts.policy);
    const heldBy = holdingVerdict(this.decided);
    if (heldBy && !this.request.expectsPack) {
      // Only deletions, held: no pack follows and the client waits for the report, so it waits here.
      this.mode = 'done';
      if (!(await this.approved(heldBy))) return this.refuse();
      if (!(await this.recordPush('allowed'))) return;
      const body = new PassThrough();
      body.end(prefix);
      this.finishWith({ kind: 'forward', body });
      return;
    }
    // Held: kept on disk like a guarded push until the client's side ends, then decided.
    if (heldBy) return this.startHolding(prefix, pack);
    if (this.decided.some((u) => !u.allowed)) {
      this.mode = 'draining';
      for (const c of pack) this.packBytes += c.length;
      if (!this.request.expectsPack) {
        // Only deletions: no pack follows, and the client waits for the report.
        this.mode = 'done';
        await this.refuse();
      }
      return;
    }
    if (!(await this.recordPush('allowed'))) return;
    this.mode = 'streaming';
    this.body = new PassThrough({ highWaterMark: HIGH_WATER });
    this.inspector = new PackInspector(this.format);
    this.body.write(prefix);
    this.finishWith({ kind: 'forward', body: this.body });
    for (const c of pack) await this.streamBytes(c);
  }

  /** From here on the request is spooled (and its pack inspected) until the client's side ends. */
  private async startHolding(prefix: Buffer, pack: Buffer[]): Promise<void> {
    this.guarded = true;
    this.mode = 'holding';
    this.decided = null;
    this.inspector = new PackInspector(this.format);
    this.spool = await PushSpool.create(this.opts.limits.spoolDir);
    this.prefixBytes = prefix.length;
    if (prefix.length > this.opts.limits.maxPushBytes) {
      for (const c of pack) this.packBytes += c.length;
      return this.exceed();
    }
    await this.spool.write(prefix);
    for (const c of pack) await this.holdBytes(c);
  }

  /**
   * Waits for people to decide on a held push. Not approved (or no approvals here): the held
   * updates are refused with why, the others as not applied, and false.
   */
  private async approved(verdict: Verdict): Promise<boolean> {
    const decided = this.decided!;
    let refusal: string | null;
    if (!this.opts.holds) {
      refusal = 'holding pushes for approval is not available here, so it is refused';
    } else {
      const updates = decided.map((u) => ({ ref: u.ref, kind: u.class === 'create' ? 'create' as const : u.class === 'delete' ? 'delete' as const : 'update' as const,
        ...(u.class === 'fast-forward' ? { fastForward: true } : u.class === 'rewrite' ? { fastForward: false } : {}), old: u.old, new: u.new }));
      const hold = this.opts.holds.hold(verdict, { kind: 'git', updates });
      this.waitingOn = hold;
      this.opts.notify?.(holdNotice('push', hold, verdict));
      const outcome = await hold.outcome;
      this.waitingOn = null;
      this.heldRecord = { request: hold.id, outcome: outcome.kind };
      refusal = this.aborted ? 'the push was interrupted' : heldRefusal('push', hold, outcome);
    }
    if (refusal === null) return true;
    for (const u of decided) {
      if (!u.allowed) continue;
      u.allowed = false;
      u.reason = u.held ? `${u.reason ?? 'held for approval'}: ${refusal.replace(/^gatehouse: /, '')}` : NOT_APPLIED;
    }
    return false;
  }

  private async streamBytes(chunk: Buffer): Promise<void> {
    this.packBytes += chunk.length;
    const body = this.body!;
    const flowing = body.write(chunk);
    await this.inspect(chunk);
    if (!flowing && !body.destroyed) {
      await new Promise<void>((resolve) => {
        const done = () => { body.off('drain', done); body.off('close', done); resolve(); };
        body.on('drain', done);
        body.on('close', done);
      });
    }
  }

  private async holdBytes(chunk: Buffer): Promise<void> {
    this.packBytes += chunk.length;
    const spool = this.spool!;
    if (spool.bytes + chunk.length > this.opts.limits.maxPushBytes) return this.exceed();
    await Promise.all([spool.write(chunk), this.inspect(chunk)]);
    if (this.inspectProblem) {
      // The pack cannot be proven: the push will be refused, so nothing more is kept.
      this.mode = 'draining';
      await spool.remove();
    }
  }

  private async inspect(chunk: Buffer): Promise<void> {
    if (this.inspectProblem || !this.inspector) return;
    try {
      await this.inspector.write(chunk);
    } catch (err) {
      this.inspectProblem = `the pushed pack could not be read: ${(err as Error).message}`;
    }
  }

  private async exceed(): Promise<void> {
    this.overLimit = true;
    this.mode = 'draining';
    this.inspector?.abandon();
    await this.spool?.remove();
  }

  // ── Deciding ─────────────────────────────────────────────────────────────────

  private async clientEnded(): Promise<void> {
    const mode = this.mode;
    if (mode === 'done') return;
    if (mode === 'commands') {
      // The client ended before its command list did (`git ls-remote` against receive-pack,
      // or a connection cut short): the target gets what was sent and makes of it what it can.
      this.mode = 'done';
      const body = new PassThrough();
      body.end(Buffer.concat(this.held));
      this.held = [];
      this.finishWith({ kind: 'forward', body });
      return;
    }
    if (mode === 'streaming') {
      this.mode = 'done';
      this.body!.end();
      return;
    }
    if (mode === 'draining' && this.decided) {
      this.mode = 'done';
      await this.refuse();
      return;
    }
    // A held push (or one drained after its pack proved unreadable or too large): decide now.
    const limit = this.opts.limits.maxPushBytes;
    let inspection: PackInspection | null = null;
    let problem = this.inspectProblem;
    if (this.overLimit) problem = `the push is larger than the ${limit}-byte limit for inspection (git.max_push_bytes)`;
    else if (!problem && this.packBytes > 0) {
      try {
        // Inspector offsets count from the pack's start; the spool holds the command list first.
        inspection = await this.inspector!.end((s, e) => this.spool!.read(this.prefixBytes + s, this.prefixBytes + e));
      } catch (err) {
        problem = `the pushed pack could not be read: ${(err as Error).message}`;
      }
    }
    this.decided = await decideRefUpdates(this.request.updates, inspection ? inspection.commits : null, this.opts.protect, this.opts.askTarget, problem ?? undefined, this.opts.policy);
    this.mode = 'done';
    if (this.overLimit) {
      // Nothing of it was kept: it can be neither verified nor held, so none of it applies.
      for (const u of this.decided) {
        if (u.held && u.allowed) Object.assign(u, { allowed: false, reason: `held for approval, but the push is too large for gatehouse to keep (over ${limit} bytes, git.max_push_bytes)` });
        else if (u.reason && u.reason !== NOT_APPLIED && !u.allowed) u.reason = `protected ref: push too large for gatehouse to verify (over ${limit} bytes, git.max_push_bytes)`;
      }
      for (const u of this.decided) if (u.allowed) Object.assign(u, { allowed: false, reason: NOT_APPLIED });
    }
    const heldBy = holdingVerdict(this.decided);
    if (heldBy && !(await this.approved(heldBy))) {
      await this.spool?.remove();
      if (this.aborted) return;
      return this.refuse();
    }
    if (this.decided.every((u) => u.allowed)) {
      if (!(await this.recordPush('allowed'))) return;
      this.finishWith({ kind: 'forward', body: this.spool!.replay() });
      return;
    }
    await this.spool?.remove();
    await this.refuse(this.overLimit ? `gatehouse refused a push of more than ${limit} bytes (the limit for pushes to protected refs, git.max_push_bytes)` : 'ok');
  }

  private async refuse(unpack = 'ok'): Promise<void> {
    await this.recordPush('refused').catch(() => true);
    this.opts.rec.append('git.push.result', { ...this.opts.recordBase, ...refusedPushResult(this.decided!, this.packBytes) });
    this.finishWith({ kind: 'refuse', report: refusalReport(this.request.capabilities, this.decided!, unpack) });
  }

  /** The git.push record, durable before anything is forwarded; false (and the push failed) when it cannot be. */
  private async recordPush(verdict: 'allowed' | 'refused'): Promise<boolean> {
    const r = this.request;
    const data = {
      ...this.opts.recordBase, verdict, updates: this.decided, pushOptions: r.pushOptions, capabilities: r.capabilities, ...(this.heldRecord ? { held: this.heldRecord } : {}),
      ...(this.guarded ? { packBytes: this.packBytes } : {}), ...(r.pushCert ? { signed: true } : {}), ...(r.shallow.length ? { shallow: r.shallow.length } : {}),
    };
    try {
      await this.opts.rec.beforeForward('git.push', data);
      return true;
    } catch {
      if (verdict === 'allowed') {
        await this.spool?.remove();
        this.fail('the gateway cannot record right now; nothing was sent to the target');
      }
      return false;
    }
  }

  private fail(message: string): void {
    this.mode = 'done';
    this.inspector?.abandon();
    void this.spool?.remove();
    this.finishWith({ kind: 'fail', message });
  }

  private finishWith(o: PushOutcome): void {
    if (this.settled) return;
    this.settled = true;
    this.settle(o);
  }
}
