// The policy file operators write (YAML, docs/policy.md): read, checked completely before anything
// uses it — a bad file is refused with the line and the reason — and turned into plain rule
// objects with a canonical form whose hash names the version.
import { createHash } from 'node:crypto';
import { LineCounter, parseDocument, isMap, isSeq, type Document } from 'yaml';
import { parseDuration } from '../util/duration.ts';
import { canonicalJson } from '../integrity/canonical-json.ts';
import { FILE_OPS, MASK_STYLES, type Decision, type FileOp, type MaskStyle } from './types.ts';
import { DETECTOR_NAMES, checkMaskPattern } from './mask-detectors.ts';

export interface RuleScope {
  kinds?: string[];
  identities?: string[];
  groups?: string[];
  /** Claim name → glob its value must match (a claim that is absent never matches). */
  claims?: Record<string, string>;
  connections?: string[];
  /** Connection types: postgres, ssh, git-http. */
  types?: string[];
}

export interface SqlCriteria { commands?: string[]; withoutWhere?: boolean; functions?: string[]; tables?: string[]; procedural?: boolean }
export interface ExecCriteria { commands?: string[]; programs?: string[] }
export interface FileCriteria { paths?: string[]; ops?: FileOp[] }
export interface GitCriteria { refs?: string[]; force?: boolean; delete?: boolean; create?: boolean; update?: boolean }

/**
 * What a mask rule masks (action: mask): result columns by `schema.table.column` glob, and values
 * in which a secret detector finds something; `style` says how (default redact).
 */
export interface MaskCriteria {
  columns?: string[];
  detectors?: string[];
  /** Operator-defined detectors: a name and a regular expression (checked for catastrophic shapes). */
  patterns?: MaskPattern[];
  style: MaskStyle;
}

export interface MaskPattern { name: string; pattern: string; flags?: string; group?: number }

/** A rule's action: a decision on an action, or `mask` (a rule about what comes back, never a decision). */
export type RuleAction = Decision | 'mask';

export interface PolicyRule {
  name: string;
  when: RuleScope;
  /** At most one of these; none: the rule applies to every action in its scope. */
  sql?: SqlCriteria;
  exec?: ExecCriteria;
  shell?: boolean;
  files?: FileCriteria;
  git?: GitCriteria;
  /** action: mask only. */
  mask?: MaskCriteria;
  action: RuleAction;
  /** Shown to the client with a deny or hold. */
  message?: string;
  approvers?: { groups: string[]; identities: string[] };
  quorum?: number;
  timeoutMs?: number;
}

export interface PolicyDocument { rules: PolicyRule[] }

export class PolicyFileError extends Error {
  readonly line: number | null;
  constructor(message: string, line: number | null) {
    super(line !== null ? `line ${line}: ${message}` : message);
    this.line = line;
  }
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$/;
const MAX_RULES = 1000;
const MAX_LIST = 256;
const MAX_TEXT = 1024;

/** Reads and checks a policy file; throws PolicyFileError naming the line of the first problem. */
export function parsePolicyFile(text: string): PolicyDocument {
  if (text.length > 1024 * 1024) throw new PolicyFileError('the policy file is larger than 1 MiB', null);
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, uniqueKeys: true, prettyErrors: false });
  const first = doc.errors[0];
  if (first) throw new PolicyFileError(first.message.split('\n')[0]!, lines.linePos(first.pos[0]).line);
  const lineOf = (path: Array<string | number>): number | null => {
    const node = doc.getIn(path, true) as { range?: [number, number, number] } | undefined;
    const key = path.length > 0 ? keyNodeOf(doc, path) : undefined;
    const offset = key?.range?.[0] ?? node?.range?.[0];
    return offset === undefined ? null : lines.linePos(offset).line;
  };
  const fail = (path: Array<string | number>, message: string): never => { throw new PolicyFileError(message, lineOf(path)); };
  const root = doc.toJS({ maxAliasCount: 0 }) as unknown;
  if (root === null || root === undefined) fail([], 'the policy is empty: it needs a list of rules');
  if (!isObject(root)) fail([], 'the policy must be a mapping with `rules:`');
  const top = root as Record<string, unknown>;
  for (const k of Object.keys(top)) if (k !== 'rules' && k !== 'version') fail([k], `unknown key "${k}" (expected rules, version)`);
  if (top.version !== undefined && top.version !== 1) fail(['version'], 'version must be 1');
  if (!Array.isArray(top.rules)) fail(['rules'], '`rules` must be a list');
  const list = top.rules as unknown[];
  if (list.length > MAX_RULES) fail(['rules'], `at most ${MAX_RULES} rules`);
  const seen = new Set<string>();
  const patterns = new Set<string>();
  const rules = list.map((raw, i) => {
    const rule = readRule(raw, ['rules', i], fail);
    if (seen.has(rule.name)) fail(['rules', i, 'name'], `a second rule named "${rule.name}": rule names must be unique`);
    seen.add(rule.name);
    for (const [j, p] of (rule.mask?.patterns ?? []).entries()) {
      if (patterns.has(p.name)) fail(['rules', i, 'mask', 'patterns', j], `rule "${rule.name}": a second pattern named "${p.name}": pattern names must be unique in the policy`);
      patterns.add(p.name);
    }
    return rule;
  });
  return { rules };
}

function keyNodeOf(doc: Document, path: Array<string | number>): { range?: [number, number, number] } | undefined {
  const parent = path.length === 1 ? doc.contents : doc.getIn(path.slice(0, -1), true);
  const last = path[path.length - 1];
  if (isMap(parent)) {
    const pair = parent.items.find((p) => (p.key as { value?: unknown } | null)?.value === last);
    return pair?.key as { range?: [number, number, number] } | undefined;
  }
  if (isSeq(parent) && typeof last === 'number') return parent.items[last] as { range?: [number, number, number] } | undefined;
  return undefined;
}

type Fail = (path: Array<string | number>, message: string) => never;

const RULE_KEYS = ['name', 'when', 'sql', 'exec', 'shell', 'files', 'git', 'mask', 'action', 'message', 'approvers', 'quorum', 'timeout'];
const ACTIONS: readonly RuleAction[] = ['allow', 'deny', 'hold', 'audit', 'mask'];

function readRule(raw: unknown, at: Array<string | number>, fail: Fail): PolicyRule {
  if (!isObject(raw)) fail(at, 'each rule must be a mapping (name:, action:, …)');
  const r = raw as Record<string, unknown>;
  for (const k of Object.keys(r)) if (!RULE_KEYS.includes(k)) fail([...at, k], `unknown key "${k}" in a rule (expected ${RULE_KEYS.join(', ')})`);
  if (typeof r.name !== 'string' || !NAME.test(r.name)) fail([...at, 'name'], 'each rule needs a name: letters, digits, _ . : - (at most 100)');
  const name = r.name as string;
  if (typeof r.action !== 'string' || !ACTIONS.includes(r.action as RuleAction)) fail([...at, 'action'], `rule "${name}": action must be one of ${ACTIONS.join(', ')}`);
  const action = r.action as RuleAction;
  if (action === 'mask') return readMaskRule(r, at, name, fail);
  if (r.mask !== undefined) fail([...at, 'mask'], `rule "${name}": mask: belongs to a rule with action: mask`);
  const targets = ['sql', 'exec', 'shell', 'files', 'git'].filter((k) => r[k] !== undefined);
  if (targets.length > 1) fail([...at, targets[1]!], `rule "${name}" names ${targets.join(' and ')}: a rule is about one kind of action (split it in two)`);
  const rule: PolicyRule = { name, when: readScope(r.when, [...at, 'when'], name, fail), action };
  if (r.sql !== undefined) rule.sql = readSql(r.sql, [...at, 'sql'], name, fail);
  if (r.exec !== undefined) rule.exec = readExec(r.exec, [...at, 'exec'], name, fail);
  if (r.shell !== undefined) {
    if (r.shell !== true) fail([...at, 'shell'], `rule "${name}": shell: true is the only form (the rule is about opening interactive shells)`);
    rule.shell = true;
  }
  if (r.files !== undefined) rule.files = readFiles(r.files, [...at, 'files'], name, fail);
  if (r.git !== undefined) rule.git = readGit(r.git, [...at, 'git'], name, fail);
  if (r.message !== undefined) rule.message = text(r.message, [...at, 'message'], name, fail);
  const holdOnly = ['approvers', 'quorum', 'timeout'].filter((k) => r[k] !== undefined);
  if (action !== 'hold' && holdOnly.length > 0) fail([...at, holdOnly[0]!], `rule "${name}": ${holdOnly[0]} applies only to action: hold`);
  if (r.approvers !== undefined) {
    if (!isObject(r.approvers)) fail([...at, 'approvers'], `rule "${name}": approvers must be a mapping with groups: and/or identities:`);
    const a = r.approvers as Record<string, unknown>;
    for (const k of Object.keys(a)) if (k !== 'groups' && k !== 'identities') fail([...at, 'approvers', k], `rule "${name}": unknown key "${k}" in approvers (expected groups, identities)`);
    rule.approvers = { groups: strings(a.groups, [...at, 'approvers', 'groups'], name, fail) ?? [], identities: strings(a.identities, [...at, 'approvers', 'identities'], name, fail) ?? [] };
  }
  if (r.quorum !== undefined) {
    if (!Number.isInteger(r.quorum) || (r.quorum as number) < 1 || (r.quorum as number) > 10) fail([...at, 'quorum'], `rule "${name}": quorum must be a whole number from 1 to 10`);
    rule.quorum = r.quorum as number;
  }
  if (r.timeout !== undefined) {
    let seconds: number;
    try {
      seconds = parseDuration(String(r.timeout));
    } catch (err) {
      fail([...at, 'timeout'], `rule "${name}": timeout: ${(err as Error).message}`);
    }
    if (seconds! < 1 || seconds! > 7 * 86_400) fail([...at, 'timeout'], `rule "${name}": timeout must be between 1s and 7d`);
    rule.timeoutMs = seconds! * 1000;
  }
  return rule;
}

/**
 * A mask rule: its scope and what it masks. It decides nothing, so it names no kind of action
 * (sql:, exec:, …) and takes no message or approval terms.
 */
function readMaskRule(r: Record<string, unknown>, at: Array<string | number>, name: string, fail: Fail): PolicyRule {
  for (const k of ['sql', 'exec', 'shell', 'files', 'git', 'message', 'approvers', 'quorum', 'timeout']) {
    if (r[k] !== undefined) fail([...at, k], `rule "${name}": ${k} does not apply to action: mask (a mask rule says what is masked in what comes back, in mask:, for the sessions in its when:)`);
  }
  if (r.mask === undefined) fail([...at, 'action'], `rule "${name}": action: mask needs mask: { columns: [...], detectors: [...], style: ... }`);
  const at2 = [...at, 'mask'];
  const o = criteria(r.mask, at2, name, fail, ['columns', 'detectors', 'patterns', 'style']);
  const m: MaskCriteria = { style: 'redact' };
  const columns = strings(o.columns, [...at2, 'columns'], name, fail);
  if (columns) {
    columns.forEach((c, i) => {
      if (c.split('.').some((part) => part === '')) fail([...at2, 'columns', i], `rule "${name}": column "${c}" has an empty part: write schema.table.column, table.column or column (globs: * and ?)`);
      if (c.split('.').length > 3) fail([...at2, 'columns', i], `rule "${name}": column "${c}" has more than three parts: write schema.table.column, table.column or column`);
    });
    m.columns = columns;
  }
  const detectors = strings(o.detectors, [...at2, 'detectors'], name, fail);
  if (detectors) {
    detectors.forEach((d, i) => {
      if (!DETECTOR_NAMES.includes(d)) fail([...at2, 'detectors', i], `rule "${name}": unknown detector "${d}" (${DETECTOR_NAMES.join(', ')})`);
    });
    m.detectors = [...new Set(detectors)];
  }
  if (o.patterns !== undefined) {
    if (!Array.isArray(o.patterns) || o.patterns.length === 0 || o.patterns.length > 64) fail([...at2, 'patterns'], `rule "${name}": patterns must be a list (at most 64) of { name:, pattern: } mappings`);
    m.patterns = (o.patterns as unknown[]).map((raw, i) => {
      const o2 = criteria(raw, [...at2, 'patterns', i], name, fail, ['name', 'pattern', 'flags', 'group']);
      const p: MaskPattern = { name: text(o2.name, [...at2, 'patterns', i, 'name'], name, fail), pattern: text(o2.pattern, [...at2, 'patterns', i, 'pattern'], name, fail) };
      if (o2.flags !== undefined) p.flags = text(o2.flags, [...at2, 'patterns', i, 'flags'], name, fail);
      if (o2.group !== undefined) {
        if (!Number.isInteger(o2.group) || (o2.group as number) < 1 || (o2.group as number) > 9) fail([...at2, 'patterns', i, 'group'], `rule "${name}": group must be a capture group number from 1 to 9`);
        p.group = o2.group as number;
      }
      const problem = checkMaskPattern(p);
      if (problem) fail([...at2, 'patterns', i], `rule "${name}": pattern ${JSON.stringify(p.name)}: ${problem}`);
      return p;
    });
  }
  if (!m.columns && !m.detectors && !m.patterns) fail(at2, `rule "${name}": mask needs columns:, detectors: or patterns:`);
  if (o.style !== undefined) {
    if (typeof o.style !== 'string' || !(MASK_STYLES as readonly string[]).includes(o.style)) fail([...at2, 'style'], `rule "${name}": style must be one of ${MASK_STYLES.join(', ')}`);
    m.style = o.style as MaskStyle;
  }
  return { name, when: readScope(r.when, [...at, 'when'], name, fail), action: 'mask', mask: m };
}

const SCOPE_KEYS = ['kinds', 'identities', 'groups', 'claims', 'connections', 'types'];

function readScope(raw: unknown, at: Array<string | number>, name: string, fail: Fail): RuleScope {
  if (raw === undefined) return {};
  if (!isObject(raw)) fail(at, `rule "${name}": when must be a mapping (kinds:, identities:, groups:, claims:, connections:, types:)`);
  const w = raw as Record<string, unknown>;
  for (const k of Object.keys(w)) if (!SCOPE_KEYS.includes(k)) fail([...at, k], `rule "${name}": unknown key "${k}" in when (expected ${SCOPE_KEYS.join(', ')})`);
  const scope: RuleScope = {};
  for (const k of ['kinds', 'identities', 'groups', 'connections', 'types'] as const) {
    const v = strings(w[k], [...at, k], name, fail);
    if (v) scope[k] = v;
  }
  if (scope.types) for (const t of scope.types) if (!['postgres', 'ssh', 'git-http'].includes(t)) fail([...at, 'types'], `rule "${name}": unknown connection type "${t}" (postgres, ssh, git-http)`);
  if (w.claims !== undefined) {
    if (!isObject(w.claims)) fail([...at, 'claims'], `rule "${name}": claims must be a mapping of claim name to glob`);
    const claims: Record<string, string> = {};
    for (const [k, v] of Object.entries(w.claims as Record<string, unknown>)) {
      if (typeof v !== 'string' && typeof v !== 'number' && typeof v !== 'boolean') fail([...at, 'claims', k], `rule "${name}": claim ${k} must be a text, number or boolean`);
      claims[k] = String(v);
    }
    scope.claims = claims;
  }
  return scope;
}

function readSql(raw: unknown, at: Array<string | number>, name: string, fail: Fail): SqlCriteria {
  const o = criteria(raw, at, name, fail, ['commands', 'without_where', 'functions', 'tables', 'procedural']);
  const c: SqlCriteria = {};
  const commands = strings(o.commands, [...at, 'commands'], name, fail);
  if (commands) c.commands = commands.map((x) => x.trim().replace(/\s+/g, ' ').toUpperCase());
  if (o.without_where !== undefined) c.withoutWhere = bool(o.without_where, [...at, 'without_where'], name, fail);
  const functions = strings(o.functions, [...at, 'functions'], name, fail);
  if (functions) c.functions = functions.map((x) => x.toLowerCase());
  const tables = strings(o.tables, [...at, 'tables'], name, fail);
  if (tables) c.tables = tables;
  if (o.procedural !== undefined) c.procedural = bool(o.procedural, [...at, 'procedural'], name, fail);
  return c;
}

function readExec(raw: unknown, at: Array<string | number>, name: string, fail: Fail): ExecCriteria {
  const o = criteria(raw, at, name, fail, ['commands', 'programs']);
  const c: ExecCriteria = {};
  const commands = strings(o.commands, [...at, 'commands'], name, fail);
  if (commands) c.commands = commands.map((x) => x.trim().replace(/\s+/g, ' '));
  const programs = strings(o.programs, [...at, 'programs'], name, fail);
  if (programs) c.programs = programs;
  return c;
}

function readFiles(raw: unknown, at: Array<string | number>, name: string, fail: Fail): FileCriteria {
  const o = criteria(raw, at, name, fail, ['paths', 'ops']);
  const c: FileCriteria = {};
  const paths = strings(o.paths, [...at, 'paths'], name, fail);
  if (paths) c.paths = paths;
  const ops = strings(o.ops, [...at, 'ops'], name, fail);
  if (ops) {
    for (const op of ops) if (!(FILE_OPS as readonly string[]).includes(op)) fail([...at, 'ops'], `rule "${name}": unknown file operation "${op}" (${FILE_OPS.join(', ')})`);
    c.ops = ops as FileOp[];
  }
  return c;
}

function readGit(raw: unknown, at: Array<string | number>, name: string, fail: Fail): GitCriteria {
  const o = criteria(raw, at, name, fail, ['refs', 'force', 'delete', 'create', 'update']);
  const c: GitCriteria = {};
  const refs = strings(o.refs, [...at, 'refs'], name, fail);
  if (refs) c.refs = refs;
  for (const k of ['force', 'delete', 'create', 'update'] as const) if (o[k] !== undefined) c[k] = bool(o[k], [...at, k], name, fail);
  return c;
}

function criteria(raw: unknown, at: Array<string | number>, name: string, fail: Fail, keys: string[]): Record<string, unknown> {
  if (!isObject(raw)) fail(at, `rule "${name}": ${String(at[at.length - 1])} must be a mapping (${keys.join(', ')})`);
  const o = raw as Record<string, unknown>;
  for (const k of Object.keys(o)) if (!keys.includes(k)) fail([...at, k], `rule "${name}": unknown key "${k}" (expected ${keys.join(', ')})`);
  return o;
}

function strings(v: unknown, at: Array<string | number>, name: string, fail: Fail): string[] | undefined {
  if (v === undefined) return undefined;
  const list = typeof v === 'string' ? [v] : v;
  if (!Array.isArray(list) || list.length === 0 || list.length > MAX_LIST) fail(at, `rule "${name}": ${String(at[at.length - 1])} must be a non-empty list of texts (at most ${MAX_LIST})`);
  return (list as unknown[]).map((x, i) => {
    if (typeof x !== 'string' && typeof x !== 'number') fail([...at, i], `rule "${name}": ${String(at[at.length - 1])} holds something that is not a text`);
    return text(String(x), [...at, i], name, fail);
  });
}

function text(v: unknown, at: Array<string | number>, name: string, fail: Fail): string {
  if (typeof v !== 'string' || v.length === 0 || v.length > MAX_TEXT) fail(at, `rule "${name}": expected a text of 1 to ${MAX_TEXT} characters`);
  if (/[\x00-\x08\x0b-\x1f\x7f]/.test(v as string)) fail(at, `rule "${name}": control characters are not allowed`);
  return v as string;
}

function bool(v: unknown, at: Array<string | number>, name: string, fail: Fail): boolean {
  if (typeof v !== 'boolean') fail(at, `rule "${name}": ${String(at[at.length - 1])} must be true or false`);
  return v as boolean;
}

function isObject(v: unknown): boolean {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/** The canonical form of a policy (what is stored and hashed): the checked rules as canonical JSON. */
export function canonicalPolicy(doc: PolicyDocument): string {
  return canonicalJson(doc);
}

export function policyHash(doc: PolicyDocument): string {
  return createHash('sha256').update(canonicalPolicy(doc)).digest('hex');
}
