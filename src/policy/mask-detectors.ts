// The seam between mask rules and the secret detector catalogue (src/masking/detectors.ts): the
// detector names a rule may list, and how one session's mask plan masks a whole value or the
// secrets in a text. Engines use this with the plan the policy stage gives them; they hold no rules.
import { BUILTIN_DETECTOR_NAMES, findSecrets, maskValue, selectDetectors, type Detector } from '../masking/detectors.ts';
import type { MaskChoice, MaskPlan } from './policy.ts';
import type { MaskStyle } from './types.ts';

/** Detector names a mask rule may list (the catalogue's). */
export const DETECTOR_NAMES: readonly string[] = BUILTIN_DETECTOR_NAMES;

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

  constructor(plan: MaskPlan, key: Buffer) {
    this.plan = plan;
    this.key = key;
    this.detectors = plan.detectors.length > 0 ? selectDetectors(plan.detectors.map((d) => d.detector)) : [];
    for (const d of plan.detectors) this.styles.set(d.detector, d.style);
  }

  /** Whether detectors run on values. */
  get detecting(): boolean { return this.detectors.length > 0; }

  /** A masked column's value in its rule's style (labelled with the column's name). */
  column(value: string, choice: MaskChoice, label: string): Masked {
    return maskValue(value, choice.style, label, { key: this.key });
  }

  /**
   * The text with what the detectors find masked; undefined when they find nothing (the value is
   * sent as it is). A finding whose rule's style is null makes the whole value NULL.
   */
  secrets(text: string): Masked | undefined {
    if (this.detectors.length === 0) return undefined;
    const findings = findSecrets(text, this.detectors);
    if (findings.length === 0) return undefined;
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
