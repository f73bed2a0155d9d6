// The seam between mask rules and the secret detector catalogue (src/masking/detectors.ts): the
// detector names a rule may list, and how one session's mask plan masks a whole value or the
// secrets in a text. Engines use this with the plan the policy stage gives them; they hold no rules.
import { BUILTIN_DETECTOR_NAMES, customDetector, findSecrets, maskValue, selectDetectors, type Detector } from '../masking/detectors.ts';
import type { MaskPattern } from './policy-file.ts';
import type { MaskChoice, MaskPlan } from './policy.ts';
import type { MaskStyle } from './types.ts';

/** Detector names a mask rule may list (the catalogue's). */
export const DETECTOR_NAMES: readonly string[] = BUILTIN_DETECTOR_NAMES;

/** Why an operator's pattern is refused (a name taken or malformed, a catastrophic shape, bad flags), or null. */
export function checkMaskPattern(p: MaskPattern): string | null {
  try {
    customDetector(p);
    return null;
  } catch (err) {
    return (err as Error).message.replace(/^detector [^:]*: /, '');
  }
}

/** What a masked value becomes: a text, or SQL NULL. */
export type Masked = string | null;

/**
 * One session's masking, from its plan: a column value masked whole in its rule's style, and the
 * detector findings in a text masked each in the style of the rule that lists its detector.
 */
export class ValueMasking {
  readonly plan: MaskPlan;
  private readonly key: Buffer;
  private readonly detectors: readonly Detector[];
  private readonly styles = new Map<string, MaskStyle>();
  private readonly rules = new Map<string, string>();
  /** One test for all the detectors' prefilters: most values hold nothing any of them looks for. */
  private readonly prefilters: readonly RegExp[];

  constructor(plan: MaskPlan, key: Buffer) {
    this.plan = plan;
    this.key = key;
    this.detectors = plan.detectors.length > 0 ? selectDetectors(plan.detectors.map((d) => d.detector), plan.patterns) : [];
    for (const d of plan.detectors) { this.styles.set(d.detector, d.style); this.rules.set(d.detector, d.rule); }
    // Joined by their flags (a case-sensitive prefilter stays so: AKIA, not akia, in hex digests).
    const byFlags = new Map<string, string[]>();
    for (const d of this.detectors) {
      const flags = d.prefilter.flags.replace(/[gy]/g, '');
      byFlags.set(flags, [...(byFlags.get(flags) ?? []), `(?:${d.prefilter.source})`]);
    }
    this.prefilters = [...byFlags].map(([flags, sources]) => new RegExp(sources.join('|'), flags));
  }

  /** Whether detectors run on values. */
  get detecting(): boolean { return this.detectors.length > 0; }

  /** A masked column's value in its rule's style (labelled with the column's name). */
  column(value: string, choice: MaskChoice, label: string): Masked {
    return maskValue(value, choice.style, label, { key: this.key });
  }

  /**
   * Whether any detector could find something in text (false: none will). Prefilters look for
   * ASCII words, so the latin1 reading of UTF-8 (or any ASCII-compatible) bytes answers for every
   * value in them: one test can clear a whole chunk of rows.
   */
  mayHold(text: string): boolean {
    return this.prefilters.some((p) => p.test(text));
  }

  /**
   * The text with what the detectors find masked; undefined when they find nothing (the value is
   * sent as it is). A finding whose rule's style is null makes the whole value NULL. `found`
   * gets each finding's detector and rule (never the value).
   */
  secrets(text: string, found?: Array<{ detector: string; rule: string }>): Masked | undefined {
    if (!this.mayHold(text)) return undefined;
    const findings = findSecrets(text, this.detectors);
    if (findings.length === 0) return undefined;
    if (found) for (const f of findings) found.push({ detector: f.detector, rule: this.rules.get(f.detector) ?? '' });
    let out = '';
    let at = 0;
    for (const f of findings) {
      if (f.start < at) continue;
      const masked = maskValue(text.slice(f.start, f.end), this.styles.get(f.detector) ?? 'redact', f.detector, { key: this.key });
      if (masked === null) return null;
      out += text.slice(at, f.start) + masked;
      at = f.end;
    }
    return out + text.slice(at);
  }
}
