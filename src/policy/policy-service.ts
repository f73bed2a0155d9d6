// The policy in force, for every engine of this gateway: loaded from the store at start, replaced
// when an operator applies a new version here, and picked up from the store when another gateway
// sharing it applied one. A version this gateway cannot read (a corrupt row, a newer format) is
// not guessed around: every action is denied until a readable version is applied.
import type { Logger } from 'pino';
import type { Identity, PolicyVersion, Store } from '../store/types.ts';
import type { AccessService } from '../access/access-service.ts';
import { parsePolicyFile, policyHash, canonicalPolicy } from './policy-file.ts';
import { CompiledPolicy, type MaskPlan } from './policy.ts';
import type { PolicyAction, PolicyPlace, PolicySubject, Verdict } from './types.ts';

export type PolicyTarget = 'sql' | 'exec' | 'shell' | 'files' | 'git';

/** How often the store is asked whether another gateway applied a newer version. */
const REFRESH_MS = 5000;

export class PolicyService {
  private readonly store: Store;
  private readonly log: Logger;
  private current: CompiledPolicy = CompiledPolicy.empty();
  /** Set when the newest version cannot be read: every decision is a deny naming why. */
  private unreadable: { version: number; why: string } | null = null;
  private timer: NodeJS.Timeout | null = null;
  private refreshing: Promise<void> | null = null;

  constructor(store: Store, log: Logger) {
    this.store = store;
    this.log = log;
  }

  async start(): Promise<void> {
    await this.refresh();
    this.timer = setInterval(() => { void this.refresh(); }, REFRESH_MS);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  get version(): number { return this.unreadable?.version ?? this.current.version; }
  get hash(): string { return this.current.hash; }
  /** Whether any rule is in force (no policy: nothing to decide, engines may skip the call). */
  get active(): boolean { return this.unreadable !== null || this.current.ruleCount > 0; }

  decide(subject: PolicySubject, place: PolicyPlace, action: PolicyAction): Verdict {
    if (this.unreadable) {
      return { decision: 'deny', rule: null, reason: `the policy in force (version ${this.unreadable.version}) cannot be read by this gateway: ${this.unreadable.why}`, policyVersion: this.unreadable.version };
    }
    return this.current.decide(subject, place, action);
  }

  /** Whether any rule could decide on this kind of action by this subject here (an unreadable policy: always). */
  appliesTo(subject: PolicySubject, place: PolicyPlace, target: PolicyTarget): boolean {
    return this.unreadable !== null || this.current.appliesTo(subject, place, target);
  }

  /** The policy as one session sees it: who and where fixed, re-checked when a new version is in force. */
  forSession(subject: PolicySubject, place: PolicyPlace): SessionPolicy {
    return new SessionPolicy(this, subject, place);
  }

  /** The compiled policy in force, or null when it cannot be read (every decision is then a deny). */
  get compiled(): CompiledPolicy | null {
    return this.unreadable ? null : this.current;
  }

  /** Checks `source` completely, stores it as the next version and puts it in force here. Throws PolicyFileError. */
  async apply(source: string, appliedBy: string): Promise<PolicyVersion> {
    const doc = parsePolicyFile(source);
    const stored = await this.store.addPolicyVersion({ hash: policyHash(doc), document: canonicalPolicy(doc), source, appliedBy, appliedAt: Date.now() });
    this.install(stored);
    return stored;
  }

  /** Looks for a newer version in the store (applied by another gateway). */
  refresh(): Promise<void> {
    this.refreshing ??= (async () => {
      try {
        const newest = await this.store.getPolicyVersion();
        if (newest && newest.version > this.version) this.install(newest);
      } catch (err) {
        this.log.warn({ err: (err as Error).message }, 'could not read the policy version from the store; keeping the one in force');
      } finally {
        this.refreshing = null;
      }
    })();
    return this.refreshing;
  }

  private install(v: PolicyVersion): void {
    if (v.version < this.version) return;
    try {
      const doc = parsePolicyFile(v.source);
      const hash = policyHash(doc);
      if (hash !== v.hash) throw new Error(`its rules hash to ${hash.slice(0, 12)}…, not to the stored ${v.hash.slice(0, 12)}…`);
      this.current = new CompiledPolicy(doc, v.version, v.hash);
      this.unreadable = null;
      this.log.info({ version: v.version, hash: v.hash, rules: doc.rules.length, appliedBy: v.appliedBy }, 'policy in force');
    } catch (err) {
      this.unreadable = { version: v.version, why: (err as Error).message };
      this.log.fatal({ version: v.version, err: (err as Error).message }, 'the newest policy version cannot be read: every action is denied until a readable one is applied');
    }
  }
}

/** Who an identity is, for the policy: its kind, every group it is in, and its workload claims. */
export async function policySubject(access: AccessService, identity: Identity): Promise<PolicySubject> {
  const subject = await access.subjectOf(identity);
  return { identity: identity.name, kind: identity.kind, groups: subject.groups.map((g) => g.name), claims: identity.claims ?? null };
}

/** One session's view of the policy: engines ask it before an action reaches the target. */
export class SessionPolicy {
  private readonly service: PolicyService;
  readonly subject: PolicySubject;
  readonly place: PolicyPlace;
  private seenVersion = -1;
  private readonly applies = new Map<PolicyTarget, boolean>();

  constructor(service: PolicyService, subject: PolicySubject, place: PolicyPlace) {
    this.service = service;
    this.subject = subject;
    this.place = place;
  }

  /** Cheap enough per message: recomputed only when the version in force changes. */
  appliesTo(target: PolicyTarget): boolean {
    if (this.seenVersion !== this.service.version) {
      this.seenVersion = this.service.version;
      this.applies.clear();
    }
    let v = this.applies.get(target);
    if (v === undefined) this.applies.set(target, v = this.service.appliesTo(this.subject, this.place, target));
    return v;
  }

  /** The rules in scope for this session, computed once per version. */
  private scoped: { policy: CompiledPolicy; rules: ReturnType<CompiledPolicy['rulesFor']> } | null = null;

  private inScope(policy: CompiledPolicy): ReturnType<CompiledPolicy['rulesFor']> {
    if (this.scoped?.policy !== policy) this.scoped = { policy, rules: policy.rulesFor(this.subject, this.place) };
    return this.scoped.rules;
  }

  private maskCache: { policy: CompiledPolicy | null; plan: MaskPlan | null } | null = null;

  /**
   * What the mask rules in scope for this session mask, or null when none applies: then an engine
   * keeps its zero-copy path. Cheap per message (recomputed once per policy version). An
   * unreadable policy denies every action, so nothing comes back to mask.
   */
  masking(): MaskPlan | null {
    const policy = this.service.compiled;
    if (this.maskCache?.policy !== policy) this.maskCache = { policy, plan: policy?.maskingFor(this.subject, this.place) ?? null };
    return this.maskCache.plan;
  }

  decide(action: PolicyAction): Verdict {
    const policy = this.service.compiled;
    if (!policy) return this.service.decide(this.subject, this.place, action);
    return policy.decideIn(this.inScope(policy), action);
  }

  /** Whether a Git rule could judge an update of `ref` by whether it fast-forwards (an unreadable policy: yes). */
  caresAboutRef(ref: string): boolean {
    const policy = this.service.compiled;
    return policy === null || policy.caresAboutRef(this.inScope(policy), ref);
  }
}
