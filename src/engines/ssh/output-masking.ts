// Mask rules on what an SSH target sends to the client (issue 15, item 3): exec stdout and stderr,
// and a terminal's output, are rewritten through a StreamMasker per stream when a mask rule with
// detectors or patterns applies to the session. The engine holds no rules: each chunk asks the
// session's policy for its mask plan (SessionPolicy.masking(), cached per policy version, as the
// PostgreSQL relay does), so a session no such rule applies to pays one check per chunk and its
// bytes are forwarded as they came (no copy, no delay).
//
// A secret split across the target's writes is still caught: the masker holds back a bounded tail
// (the last token, card digit groups, an unended private key block; at most 16 KiB). What it holds
// goes out after IDLE_MS without output, after at most MAX_HOLD_MS even while output keeps coming,
// when the target's stream ends, and before the exit status is handed on (RelayHooks.flush), so
// nothing is lost or reordered and an interactive terminal stays responsive. File transfers (SFTP,
// scp, Git services, rsync --server) are never given to this: rewriting would corrupt files.
import { selectDetectors, StreamMasker, type Detector, type MaskStyle } from '../../masking/detectors.ts';
import type { MaskPlan } from '../../policy/policy.ts';

/** Output held back is sent after this long without more output. */
export const IDLE_MS = 50;
/** ... and at the latest this long after it was first held, even while output keeps coming. */
export const MAX_HOLD_MS = 250;

/** Where a channel gets its mask plan: the session's policy (SessionPolicy.masking). */
export interface MaskPlanSource { masking(): MaskPlan | null }

/** What one plan masks in a byte stream, made once per plan. */
interface StreamPlan {
  detectors: readonly Detector[];
  styles: Map<string, Exclude<MaskStyle, 'null'>>;
  rules: Map<string, string>;
}

const streamPlans = new WeakMap<MaskPlan, StreamPlan | null>();

/** The plan's detectors for streams, or null when it lists none (a columns-only rule: nothing to do over SSH). */
function streamPlan(plan: MaskPlan | null): StreamPlan | null {
  if (!plan) return null;
  let sp = streamPlans.get(plan);
  if (sp === undefined) {
    sp = null;
    if (plan.detectors.length > 0) {
      const styles = new Map<string, Exclude<MaskStyle, 'null'>>();
      const rules = new Map<string, string>();
      // A stream cannot be NULL: a rule of style null masks its findings as redact does.
      for (const d of plan.detectors) { styles.set(d.detector, d.style === 'null' ? 'redact' : d.style); rules.set(d.detector, d.rule); }
      sp = { detectors: selectDetectors(plan.detectors.map((d) => d.detector), plan.patterns), styles, rules };
    }
    streamPlans.set(plan, sp);
  }
  return sp;
}

/** A command whose output is a file transfer's protocol (not rewritten). scp and sftp are told apart before this. */
export function transfersFiles(command: string): boolean {
  return /^\s*(?:\S*\/)?rsync\s+--server\b/.test(command);
}

/** One line of the exit event's note: which rule's detector masked how much of which stream (never the value). */
export interface ClientMaskNote { field: string; rule: string; detector: string; count: number }

/** The masking of one channel's output streams (stdout, stderr; a terminal's output). */
export class ChannelOutputMasking {
  private readonly source: MaskPlanSource;
  private readonly key: Buffer;
  private readonly streams: MaskedStream[] = [];
  private readonly counts = new Map<string, ClientMaskNote>();

  constructor(source: MaskPlanSource, key: Buffer) {
    this.source = source;
    this.key = key;
  }

  /**
   * A stream the target writes to the client; `sink` sends (and records) bytes the masker held and
   * gives up outside a chunk (after a pause, at the end). `field` names it in the exit note.
   */
  stream(field: string, sink: (bytes: Buffer) => void): MaskedStream {
    const s = new MaskedStream(this, field, sink);
    this.streams.push(s);
    return s;
  }

  /** Sends what every stream holds (the target's stream ended, or its exit status is next). */
  flush(): void {
    for (const s of this.streams) s.flush();
  }

  /** What was masked, for the exit event (empty: nothing was). */
  notes(): ClientMaskNote[] {
    return [...this.counts.values()];
  }

  /** @internal */
  plan(): StreamPlan | null {
    return streamPlan(this.source.masking());
  }

  /** @internal */
  masker(sp: StreamPlan, field: string): StreamMasker {
    return new StreamMasker({
      detectors: sp.detectors, styles: sp.styles, key: this.key,
      onFinding: (detector) => {
        const rule = sp.rules.get(detector) ?? '';
        const id = `${field}\0${rule}\0${detector}`;
        const n = this.counts.get(id);
        if (n) n.count++;
        else this.counts.set(id, { field, rule, detector, count: 1 });
      },
    });
  }
}

export class MaskedStream {
  private readonly owner: ChannelOutputMasking;
  private readonly field: string;
  private readonly sink: (bytes: Buffer) => void;
  private current: StreamPlan | null = null;
  private masker: StreamMasker | null = null;
  private timer: NodeJS.Timeout | null = null;
  private heldSince = 0;

  constructor(owner: ChannelOutputMasking, field: string, sink: (bytes: Buffer) => void) {
    this.owner = owner;
    this.field = field;
    this.sink = sink;
  }

  /**
   * The chunk as the client is to get it: undefined when no mask rule applies (send it as it is),
   * else the masked bytes that are safe to send now (possibly none: the masker holds them).
   */
  transform(chunk: Buffer): Buffer | undefined {
    const sp = this.owner.plan();
    let before: Buffer | null = null;
    if (sp !== this.current) {
      // The policy changed: what the old plan held goes first, then the new plan masks from here.
      before = this.masker ? this.masker.flushBytes() : null;
      this.stopTimer();
      this.current = sp;
      this.masker = sp ? this.owner.masker(sp, this.field) : null;
    }
    if (!this.masker) return before && before.length > 0 ? Buffer.concat([before, chunk]) : undefined;
    const out = this.masker.feedBytes(chunk);
    this.schedule();
    return before && before.length > 0 ? Buffer.concat([before, out]) : out;
  }

  /** Sends what is held now. */
  flush(): void {
    this.stopTimer();
    if (!this.masker || this.masker.pending === 0) return;
    const out = this.masker.flushBytes();
    if (out.length > 0) this.sink(out);
  }

  private schedule(): void {
    if (this.masker!.pending === 0) return this.stopTimer();
    const now = Date.now();
    if (this.timer === null) this.heldSince = now;
    else clearTimeout(this.timer);
    const wait = Math.max(0, Math.min(IDLE_MS, this.heldSince + MAX_HOLD_MS - now));
    this.timer = setTimeout(() => { this.timer = null; this.flush(); }, wait);
    this.timer.unref();
  }

  private stopTimer(): void {
    if (this.timer) { clearTimeout(this.timer); this.timer = null; }
  }
}
