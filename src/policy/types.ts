// The vocabulary of the policy stage: who acts, where, what they do, and the verdict. Engines
// describe an action in these terms and turn the verdict into their protocol's own error or wait;
// they never hold rules of their own.

/** Ordered from least to most restrictive: over several statements of one message, the most restrictive wins. */
export const DECISIONS = ['allow', 'audit', 'hold', 'deny'] as const;
export type Decision = (typeof DECISIONS)[number];

export function moreRestrictive(a: Decision, b: Decision): Decision {
  return DECISIONS.indexOf(a) >= DECISIONS.indexOf(b) ? a : b;
}

/**
 * How a masked value is shown: `redact` replaces it with a fixed marker, `partial` keeps its last
 * four characters, `hash` a keyed HMAC (equal values mask equally), `null` sends SQL NULL (for a
 * detector finding inside a text: the redact marker).
 */
export const MASK_STYLES = ['redact', 'partial', 'hash', 'null'] as const;
export type MaskStyle = (typeof MASK_STYLES)[number];

/** Who acts. */
export interface PolicySubject {
  identity: string;
  /** human, agent, ci, service… */
  kind: string;
  groups: readonly string[];
  /** Workload claims (repository, ref, run id…), when the identity came from a CI or agent token. */
  claims?: Readonly<Record<string, unknown>> | null;
}

/** Where: the connection the session goes through. */
export interface PolicyPlace {
  connection: string;
  /** The connection's type: postgres, ssh, git-http. */
  type: string;
  /** The connection's protected refs (`connection add --protect`): the policy holds them as a rule of its own. */
  protect?: readonly string[];
}

export type FileOp = 'write' | 'create' | 'truncate' | 'remove' | 'rename' | 'mkdir' | 'rmdir' | 'setstat' | 'symlink' | 'link';
export const FILE_OPS: readonly FileOp[] = ['write', 'create', 'truncate', 'remove', 'rename', 'mkdir', 'rmdir', 'setstat', 'symlink', 'link'];

export interface RefUpdateFacts {
  ref: string;
  kind: 'create' | 'update' | 'delete';
  /** For an update: whether it is a fast-forward (undefined: not known, treated as a force). */
  fastForward?: boolean;
}

/** What is about to reach the target. */
export type PolicyAction =
  /** One client message's SQL (a simple Query, or a Parse): possibly several statements. */
  | { kind: 'sql'; text: string }
  /** SQL-level work whose text the gateway cannot see (a fast-path FunctionCall by OID): refused when a deny or hold rule on SQL could apply. */
  | { kind: 'sql-opaque'; what: string }
  /** An SSH exec request's command line, or a line submitted in an interactive shell. */
  | { kind: 'exec'; command: string; interactive?: boolean }
  /** A line of shell input the gateway could not read completely (edited with keys it does not follow): refused when a deny or hold rule on commands could apply. */
  | { kind: 'exec-opaque'; what: string }
  /** Opening an interactive shell. */
  | { kind: 'shell' }
  /** A file mutation (SFTP, scp); `toPath` for rename and link targets. */
  | { kind: 'file'; op: FileOp; path: string; toPath?: string }
  /** A Git push's ref updates (over SSH or HTTP). */
  | { kind: 'git'; updates: readonly RefUpdateFacts[] };

export interface HoldTerms {
  /** Who may approve besides identities with the approve grant on the connection (empty: only those). */
  approvers: { groups: string[]; identities: string[] };
  quorum: number;
  timeoutMs: number;
}

export interface Verdict {
  decision: Decision;
  /** The rule that decided; null when no rule matched (allowed by default). */
  rule: string | null;
  /** Why, in words an operator and the client can read (never a secret). */
  reason: string;
  /** Version of the policy that decided (0: no policy applied). */
  policyVersion: number;
  /** For hold: who may approve, how many, for how long. */
  hold?: HoldTerms;
  /** For git: the decision per ref (a push is refused or held ref by ref). */
  refs?: Array<{ ref: string; decision: Decision; rule: string | null; reason: string }>;
}
