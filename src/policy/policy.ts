// The policy stage: pure, no sockets. Given who, where and what, it returns a verdict — allow,
// audit (allow, flagged), hold (needs approval) or deny — with the rule that decided and why.
// Rules are tried in order and the first whose scope and criteria match a statement (or simple
// command, or ref update) decides it; with several in one message the most restrictive decision
// wins. Nothing matched: allowed (the grant that let the session in is the default). What cannot
// be read (SQL the parser rejects, a command line only the running shell could resolve) is
// refused whenever a deny or hold rule could apply to it, never let through on a guess.
import path from 'node:path/posix';
import { matchesRefGlob, REASON_DELETE, REASON_NON_FF, REASON_UNVERIFIED } from '../engines/git/protected-refs.ts';
import { compileGlob } from '../util/glob.ts';
import { sqlFacts, type SqlStatementFacts } from './sql-facts.ts';
import { execFacts, type SimpleCommand } from './exec-facts.ts';
import type { MaskPattern, PolicyDocument, PolicyRule } from './policy-file.ts';
import { moreRestrictive, type Decision, type HoldTerms, type MaskStyle, type PolicyAction, type PolicyPlace, type PolicySubject, type RefUpdateFacts, type Verdict } from './types.ts';

export const DEFAULT_HOLD_TIMEOUT_MS = 5 * 60_000;

type Matcher = (value: string) => boolean;

function anyOf(patterns: string[] | undefined, caseless = false): Matcher | null {
  if (!patterns) return null;
  const ms = patterns.map((p) => compileGlob(p, { caseless }));
  return (v) => ms.some((m) => m(v));
}

interface CompiledRule {
  rule: PolicyRule;
  inScope: (s: PolicySubject, p: PolicyPlace) => boolean;
  target: 'any' | 'sql' | 'exec' | 'shell' | 'files' | 'git';
  sql?: (f: SqlStatementFacts) => boolean;
  /** From the text alone (lower-cased): false when the rule cannot match any statement of it, so it need not be parsed. */
  sqlMayMatch?: (lowerText: string) => boolean;
  exec?: (c: SimpleCommand) => boolean;
  files?: (op: string, paths: string[]) => boolean;
  git?: (u: RefUpdateFacts) => boolean;
}

function compile(rule: PolicyRule): CompiledRule {
  const w = rule.when;
  const kinds = anyOf(w.kinds);
  const identities = anyOf(w.identities);
  const groups = anyOf(w.groups);
  const connections = anyOf(w.connections);
  const claims = w.claims ? Object.entries(w.claims).map(([k, p]) => [k, compileGlob(p)] as const) : null;
  const inScope = (s: PolicySubject, p: PolicyPlace): boolean =>
    (!kinds || kinds(s.kind)) && (!identities || identities(s.identity)) && (!groups || s.groups.some(groups))
    && (!connections || connections(p.connection)) && (!w.types || w.types.includes(p.type))
    && (!claims || claims.every(([k, m]) => {
      const v = s.claims?.[k];
      return v !== undefined && v !== null && m(String(v));
    }));
  const c: CompiledRule = { rule, inScope, target: 'any' };
  if (rule.sql) {
    const q = rule.sql;
    const commands = anyOf(q.commands, true);
    const functions = anyOf(q.functions, true);
    const tables = anyOf(q.tables, true);
    c.target = 'sql';
    c.sqlMayMatch = sqlPrefilter(q);
    c.sql = (f) => (!commands || f.commands.some(commands)) && (q.withoutWhere !== true || f.withoutWhere)
      && (!functions || f.functions.some(functions)) && (!tables || f.tables.some(tables)) && (q.procedural !== true || f.procedural);
  } else if (rule.exec) {
    const commands = anyOf(rule.exec.commands);
    const programs = anyOf(rule.exec.programs);
    c.target = 'exec';
    c.exec = (cmd) => (!commands || commands(cmd.line)) && (!programs || programs(cmd.program));
  } else if (rule.shell) {
    c.target = 'shell';
  } else if (rule.files) {
    const f = rule.files;
    const paths = anyOf(f.paths);
    c.target = 'files';
    c.files = (op, ps) => (!f.ops || f.ops.includes(op as never)) && (!paths || ps.some(paths));
  } else if (rule.git) {
    const g = rule.git;
    const kindsGiven = g.force !== undefined || g.delete !== undefined || g.create !== undefined || g.update !== undefined;
    c.target = 'git';
    c.git = (u) => (!g.refs || g.refs.some((r) => matchesRefGlob(u.ref, r)))
      && (!kindsGiven || (g.delete === true && u.kind === 'delete') || (g.create === true && u.kind === 'create')
        || (g.update === true && u.kind === 'update') || (g.force === true && u.kind === 'update' && u.fastForward !== true));
  }
  return c;
}

interface Decided { decision: Decision; rule: PolicyRule | null; reason: string }

/** The name of the rule a connection's `--protect` globs become ('@': no policy file can name a rule so). */
export const PROTECTED_REFS_RULE = '@protected-refs';

/**
 * `connection add --protect GLOB…` as a rule: deleting a protected ref, or updating it other than
 * by a proven fast-forward, is denied. It comes before the operator's rules of every version
 * (protection is the connection's own floor, not something a policy file can loosen).
 */
export function protectedRefsRule(globs: readonly string[]): PolicyRule {
  return { name: PROTECTED_REFS_RULE, when: {}, git: { refs: [...globs], force: true, delete: true }, action: 'deny' };
}

const protectionRules = new Map<string, CompiledRule>();

function protectionRuleFor(globs: readonly string[]): CompiledRule {
  const key = globs.join('\0');
  let c = protectionRules.get(key);
  if (!c) {
    if (protectionRules.size > 1000) protectionRules.clear(); // one per connection; this only bounds odd callers
    protectionRules.set(key, c = compile(protectedRefsRule(globs)));
  }
  return c;
}

/**
 * The protected-refs rule alone on one update: what `--protect` decides where no policy file
 * applies. Creating a protected ref is allowed; deleting it is not; updating it needs
 * `fastForward === true` (not known counts as a rewrite).
 */
export function protectionDecision(u: Pick<RefUpdateFacts, 'ref' | 'kind'>, protect: readonly string[], fastForward?: boolean): { allowed: boolean; reason?: string } {
  if (protect.length === 0) return { allowed: true };
  const rule = protectionRuleFor(protect);
  const facts: RefUpdateFacts = { ref: u.ref, kind: u.kind, ...(fastForward !== undefined ? { fastForward } : {}) };
  return rule.git!(facts) ? { allowed: false, reason: protectionReason(facts) } : { allowed: true };
}

/** What the client reads when a protected ref is refused: the words `--protect` has always used. */
function protectionReason(u: RefUpdateFacts): string {
  return u.kind === 'delete' ? REASON_DELETE : u.fastForward === false ? REASON_NON_FF : REASON_UNVERIFIED;
}

/** How one result column or one detector finding is masked, and by which rule. */
export interface MaskChoice { rule: string; style: MaskStyle }

/** A detector a mask rule in scope lists, with the rule (the first to list it) and its style. */
export interface DetectorChoice extends MaskChoice { detector: string }

interface CompiledMaskRule {
  rule: PolicyRule;
  inScope: (s: PolicySubject, p: PolicyPlace) => boolean;
  /** Against `schema.table.column` of a column read from a table. */
  full: Matcher | null;
  /** Against the output name of an expression column (the column part of each glob). */
  name: Matcher | null;
}

/** "email" → "*.*.email", "users.email" → "*.users.email": every glob is matched against schema.table.column. */
function fullColumnGlob(glob: string): string {
  const parts = glob.split('.').length;
  return `${'*.'.repeat(Math.max(0, 3 - parts))}${glob}`;
}

function compileMask(rule: PolicyRule): CompiledMaskRule {
  const columns = rule.mask!.columns;
  return {
    rule,
    inScope: compile({ ...rule, action: 'allow' }).inScope,
    // Identifiers are matched without regard to case: a quoted "Email" is masked by *.email too.
    full: anyOf(columns?.map(fullColumnGlob), true),
    // A column part of wildcards only (billing.cards.*) would name every expression: it names none.
    name: anyOf(columns?.map((g) => g.slice(g.lastIndexOf('.') + 1)).filter((c) => /[^*?]/.test(c)), true),
  };
}

/**
 * What the mask rules in scope for one session mask: result columns (the first rule whose glob
 * matches a column decides its style) and detector findings (every detector any rule lists; the
 * first rule to list it decides its style). Engines ask it; they hold no rules.
 */
export class MaskPlan {
  readonly version: number;
  /** The rules it was made of, in order. */
  readonly rules: readonly string[];
  readonly detectors: readonly DetectorChoice[];
  /** The operator-defined detectors among them. */
  readonly patterns: readonly MaskPattern[];
  private readonly columnRules: readonly CompiledMaskRule[];

  constructor(version: number, rules: readonly CompiledMaskRule[]) {
    this.version = version;
    this.rules = rules.map((r) => r.rule.name);
    this.columnRules = rules.filter((r) => r.full !== null);
    const detectors: DetectorChoice[] = [];
    const patterns: MaskPattern[] = [];
    for (const r of rules) {
      for (const d of r.rule.mask!.detectors ?? []) {
        if (!detectors.some((x) => x.detector === d)) detectors.push({ detector: d, rule: r.rule.name, style: r.rule.mask!.style });
      }
      for (const p of r.rule.mask!.patterns ?? []) {
        detectors.push({ detector: p.name, rule: r.rule.name, style: r.rule.mask!.style });
        patterns.push(p);
      }
    }
    this.detectors = detectors;
    this.patterns = patterns;
  }

  /** How a column that cannot be named is masked (fail closed): as the first column rule masks. */
  get firstColumnRule(): MaskChoice | null {
    const r = this.columnRules[0];
    return r ? { rule: r.rule.name, style: r.rule.mask!.style } : null;
  }

  /** Whether any rule masks columns (else only detectors run). */
  get masksColumns(): boolean { return this.columnRules.length > 0; }

  /** A column read from a table, by its catalog name. */
  column(schema: string, table: string, column: string): MaskChoice | null {
    const id = `${schema}.${table}.${column}`;
    for (const r of this.columnRules) if (r.full!(id)) return { rule: r.rule.name, style: r.rule.mask!.style };
    return null;
  }

  /** An expression column (or one whose table cannot be told), by its output name. */
  outputName(name: string): MaskChoice | null {
    for (const r of this.columnRules) if (r.name!(name)) return { rule: r.rule.name, style: r.rule.mask!.style };
    return null;
  }
}

export class CompiledPolicy {
  readonly version: number;
  readonly hash: string;
  private readonly rules: CompiledRule[];
  private readonly maskRules: CompiledMaskRule[];

  constructor(doc: PolicyDocument, version: number, hash: string) {
    this.version = version;
    this.hash = hash;
    // Mask rules decide nothing: they are not among the rules a decision is looked for in.
    this.rules = doc.rules.filter((r) => r.action !== 'mask').map(compile);
    this.maskRules = doc.rules.filter((r) => r.action === 'mask').map(compileMask);
  }

  /** What the mask rules in scope for this subject here mask; null when none is (the relay stays zero-copy). */
  maskingFor(subject: PolicySubject, place: PolicyPlace): MaskPlan | null {
    const rules = this.maskRules.filter((r) => r.inScope(subject, place));
    return rules.length === 0 ? null : new MaskPlan(this.version, rules);
  }

  /** No policy: everything the grants admit is allowed. */
  static empty(): CompiledPolicy {
    return new CompiledPolicy({ rules: [] }, 0, '');
  }

  get ruleCount(): number { return this.rules.length + this.maskRules.length; }

  /** Whether a Git rule in scope could judge an update of `ref` (so whether it fast-forwards must be known). */
  caresAboutRef(rules: readonly CompiledRule[], ref: string): boolean {
    return rules.some((r) => r.target === 'git' && (!r.rule.git!.refs || r.rule.git!.refs.some((g) => matchesRefGlob(ref, g))));
  }

  /** Whether any rule could decide on actions of this kind by this subject here (else engines need not ask). */
  appliesTo(subject: PolicySubject, place: PolicyPlace, target: 'sql' | 'exec' | 'shell' | 'files' | 'git'): boolean {
    if (target === 'git' && place.protect?.length) return true;
    return this.rules.some((r) => (r.target === target || r.target === 'any') && r.inScope(subject, place));
  }

  decide(subject: PolicySubject, place: PolicyPlace, action: PolicyAction): Verdict {
    return this.decideIn(this.rulesFor(subject, place), action);
  }

  /** The rules in scope for this subject here (a session computes it once per policy version). */
  rulesFor(subject: PolicySubject, place: PolicyPlace): readonly CompiledRule[] {
    const own = this.rules.length === 0 ? this.rules : this.rules.filter((r) => r.inScope(subject, place));
    return place.protect?.length ? [protectionRuleFor(place.protect), ...own] : own;
  }

  decideIn(rules: readonly CompiledRule[], action: PolicyAction): Verdict {
    switch (action.kind) {
      case 'sql': return this.verdict(this.decideSql(rules, action.text));
      case 'sql-opaque': return this.verdict(unreadable(rules, 'sql', `${action.what} cannot be judged by its text`));
      case 'exec': return this.verdict(this.decideExec(rules, action.command, action.interactive === true));
      case 'exec-opaque': return this.verdict(unreadable(rules, 'exec', action.what));
      case 'shell': return this.verdict(first(rules, 'shell', () => true, 'opening an interactive shell'));
      case 'file': {
        const paths = [normalise(action.path), ...(action.toPath !== undefined ? [normalise(action.toPath)] : [])];
        return this.verdict(first(rules, 'files', (r) => r.files!(action.op, paths), `${action.op} ${paths.join(' → ')}`));
      }
      case 'git': {
        const refs = action.updates.map((u) => {
          const d = first(rules, 'git', (r) => r.git!(u), `${describeUpdate(u)} ${u.ref}`);
          return { ref: u.ref, ...d, ...(d.rule?.name === PROTECTED_REFS_RULE ? { reason: protectionReason(u) } : {}) };
        });
        const worst = refs.reduce<Decided | null>((w, d) => (w === null || moreRestrictive(w.decision, d.decision) !== w.decision ? d : w), null);
        const v = this.verdict(worst ?? { decision: 'allow', rule: null, reason: 'no ref updates' });
        v.refs = refs.map((d) => ({ ref: d.ref, decision: d.decision, rule: d.rule?.name ?? null, reason: d.reason }));
        return v;
      }
    }
  }

  private decideSql(rules: readonly CompiledRule[], text: string): Decided {
    if (rules.length === 0) return ALLOWED;
    // Most statements cannot match any rule by their words alone (a DROP rule and no "drop" in the
    // text): then they need no parse, which is what a statement costs here.
    const lower = text.toLowerCase();
    if (!rules.some((r) => r.target === 'any' || (r.target === 'sql' && r.sqlMayMatch!(lower)))) return ALLOWED;
    const facts = sqlFacts(text);
    if (!facts.ok) return unreadable(rules, 'sql', `the statement could not be parsed (${facts.error})`);
    return worstOf(facts.statements.map((f) => first(rules, 'sql', (r) => r.sql!(f), `the statement ${f.commands[f.commands.length - 1]!}`)));
  }

  private decideExec(rules: readonly CompiledRule[], command: string, interactive: boolean): Decided {
    if (rules.length === 0) return ALLOWED;
    const facts = execFacts(command);
    const decided = worstOf(facts.commands.map((c) => first(rules, 'exec', (r) => r.exec!(c), `the command "${c.line}"`)));
    if (facts.ok || decided.decision === 'deny') return decided;
    const opaque = unreadable(rules, 'exec', `the ${interactive ? 'line' : 'command'} cannot be read completely (${facts.error})`);
    return opaque.decision === 'allow' ? decided : opaque;
  }

  private verdict(d: Decided): Verdict {
    const v: Verdict = { decision: d.decision, rule: d.rule?.name ?? null, reason: d.reason, policyVersion: this.version };
    if (d.decision === 'hold' && d.rule) v.hold = holdTerms(d.rule);
    return v;
  }
}

const ALLOWED: Decided = { decision: 'allow', rule: null, reason: 'no rule applies' };

/** The first rule in scope that applies to this target (or to any action) and matches. */
function first(rules: readonly CompiledRule[], target: CompiledRule['target'], matches: (r: CompiledRule) => boolean, what: string): Decided {
  for (const r of rules) {
    if (r.target !== 'any' && r.target !== target) continue;
    if (r.target !== 'any' && !matches(r)) continue;
    return { decision: r.rule.action as Decision, rule: r.rule, reason: reasonFor(r.rule, what) };
  }
  return ALLOWED;
}

function worstOf(ds: Decided[]): Decided {
  let worst = ALLOWED;
  for (const d of ds) {
    if (moreRestrictive(worst.decision, d.decision) !== worst.decision || (d.decision === worst.decision && worst.rule === null)) worst = d;
  }
  return worst;
}

/** Text that cannot be read is refused when a deny or hold rule in scope could be about it. */
function unreadable(rules: readonly CompiledRule[], target: CompiledRule['target'], why: string): Decided {
  const r = rules.find((x) => (x.target === target || x.target === 'any') && (x.rule.action === 'deny' || x.rule.action === 'hold'));
  if (!r) return ALLOWED;
  return { decision: 'deny', rule: r.rule, reason: `${why}; refused because rule "${r.rule.name}" could apply to it` };
}

function reasonFor(rule: PolicyRule, what: string): string {
  if (rule.message) return `${rule.message} (rule "${rule.name}")`;
  switch (rule.action) {
    case 'deny': return `${what} is denied by rule "${rule.name}"`;
    case 'hold': return `${what} needs approval (rule "${rule.name}")`;
    case 'audit': return `${what} is allowed and flagged by rule "${rule.name}"`;
    default: return `${what} is allowed by rule "${rule.name}"`;
  }
}

function holdTerms(rule: PolicyRule): HoldTerms {
  return {
    approvers: { groups: rule.approvers?.groups ?? [], identities: rule.approvers?.identities ?? [] },
    quorum: rule.quorum ?? 1,
    timeoutMs: rule.timeoutMs ?? DEFAULT_HOLD_TIMEOUT_MS,
  };
}

function describeUpdate(u: RefUpdateFacts): string {
  if (u.kind !== 'update') return u.kind;
  return u.fastForward === true ? 'fast-forward' : u.fastForward === false ? 'force-update' : 'update (fast-forward not verified) of';
}

/** "/srv/app/../../etc/passwd" → "/etc/passwd": a rule sees where the operation lands. */
function normalise(p: string): string {
  return p === '' ? '.' : path.normalize(p);
}

/**
 * Statement verbs that always appear, as a word, in the text of a statement whose command tag
 * starts with them (a DROP is written with "drop", a nested DELETE too). Tags that may come from
 * other words (SELECT from TABLE or VALUES, COMMIT from END, ROLLBACK from ABORT, CREATE ROLE from
 * CREATE USER is fine: the verb is CREATE) are not here: rules on them always parse.
 */
const VERBS_IN_TEXT: ReadonlyMap<string, readonly string[]> = new Map([
  ...['drop', 'truncate', 'delete', 'update', 'insert', 'merge', 'copy', 'grant', 'revoke', 'create', 'alter', 'vacuum', 'cluster', 'reindex', 'lock',
    'do', 'call', 'prepare', 'execute', 'discard', 'deallocate', 'listen', 'notify', 'load', 'checkpoint', 'comment', 'security', 'refresh', 'import', 'set', 'reset']
    .map((v): [string, readonly string[]] => [v, [v]]),
  ['analyze', ['analyze', 'analyse']],
]);

/**
 * What a SQL rule needs to find in a statement's text before it can match: the verb of one of its
 * command globs, the literal part of a function or table name (unless the text has U&"…" escaped
 * identifiers), the words of procedural code. null parts always pass: such a rule always parses.
 */
function sqlPrefilter(q: NonNullable<PolicyRule['sql']>): (lower: string) => boolean {
  const checks: Array<(lower: string) => boolean> = [];
  if (q.commands) {
    const verbs: Array<readonly string[]> = [];
    for (const g of q.commands) {
      const words = VERBS_IN_TEXT.get(g.split(' ')[0]!.toLowerCase());
      if (!words) { verbs.length = 0; break; }
      verbs.push(words);
    }
    if (verbs.length === q.commands.length) checks.push((t) => verbs.some((ws) => ws.some((w) => t.includes(w))));
  } else if (q.withoutWhere) {
    checks.push((t) => t.includes('delete') || t.includes('update'));
  }
  for (const names of [q.functions, q.tables]) {
    if (!names) continue;
    const parts = names.map(literalParts);
    if (parts.some((p) => p.length === 0)) continue;
    checks.push((t) => t.includes('u&') || parts.some((p) => p.every((w) => t.includes(w))));
  }
  if (q.procedural) checks.push((t) => t.includes('do') || t.includes('function') || t.includes('procedure'));
  return (t) => checks.every((c) => c(t));
}

/** The literal pieces a name glob needs in the text ("vault.*" → ["vault"], "lo_*" → ["lo_"]); [] when too little is literal. */
function literalParts(glob: string): string[] {
  const out: string[] = [];
  for (const segment of glob.toLowerCase().split('.')) {
    const literal = segment.split(/[*?]/)[0]!;
    if (literal.length >= 2) out.push(literal);
  }
  return out;
}
