// What of a recorded event full-text search finds: statements, commands, typed lines, file paths,
// refs and result samples — the words a reviewer looks for — never whole event documents; and the
// review flags a session list filters on (a denial, a hold, a flagged action, lost events). Pure,
// shared by the SQLite (FTS5) and PostgreSQL (tsvector) indexes. Sessions are indexed once they
// have ended, behind the recording (never on its path): an open session is not found by its words
// until it ends.

/** Longest text indexed per event: enough for any statement a person searches by. */
const MAX_TEXT = 32 * 1024;

/** What a session list can be filtered on, as bits of sessions.review_flags. */
export const REVIEW_FLAGS = { denied: 1, held: 2, flagged: 4, lost: 8, masked: 16 } as const;
export type ReviewFlag = keyof typeof REVIEW_FLAGS;

/** The review flags of a bitmask, by name. */
export function reviewFlagNames(bits: number): ReviewFlag[] {
  return (Object.keys(REVIEW_FLAGS) as ReviewFlag[]).filter((k) => (bits & REVIEW_FLAGS[k]) !== 0);
}

/** One event as the index sees it: its searchable text (null: none) and the review flags it raises. */
export function indexedEvent(type: string, dataJson: string): { text: string | null; flags: number } {
  let d: Record<string, unknown>;
  try { d = JSON.parse(dataJson) as Record<string, unknown>; } catch { return { text: null, flags: 0 }; }
  return { text: searchableText(type, d), flags: reviewFlags(type, d) };
}

function reviewFlags(type: string, d: Record<string, unknown>): number {
  if (type === 'policy.hold') return REVIEW_FLAGS.held;
  if (type === 'recording.gap') return REVIEW_FLAGS.lost;
  let bits = 0;
  const mark = (p: unknown) => {
    const decision = (p as { decision?: unknown } | undefined)?.decision;
    if (decision === 'deny') bits |= REVIEW_FLAGS.denied;
    else if (decision === 'audit') bits |= REVIEW_FLAGS.flagged;
    else if (decision === 'hold') bits |= REVIEW_FLAGS.held;
  };
  mark(d.policy);
  // Masked output (result rows, notices, terminal output) or a secret kept out of the record.
  if (Array.isArray(d.masked) && d.masked.length > 0) bits |= REVIEW_FLAGS.masked;
  // A push carries a verdict per ref update.
  if (Array.isArray(d.updates)) for (const u of d.updates as Array<{ policy?: unknown }>) mark(u?.policy);
  return bits;
}

/** The searchable text of one event, or null when it has none. */
export function searchableText(type: string, d: Record<string, unknown>): string | null {
  if (!TYPES.has(type)) return null;
  const parts: string[] = [];
  const add = (v: unknown) => { if (typeof v === 'string' && v.length > 0) parts.push(v); };
  switch (type) {
    case 'result': {
      const sample = d.sample as unknown[][] | undefined;
      if (Array.isArray(sample)) for (const row of sample) if (Array.isArray(row)) for (const v of row) add(v);
      const err = d.error as { message?: unknown; detail?: unknown } | undefined;
      if (err) { add(err.message); add(err.detail); }
      break;
    }
    case 'git.push':
      for (const u of (d.updates as Array<{ ref?: unknown }> | undefined) ?? []) add(u.ref);
      break;
    default:
      add(d.text); add(d.command); add(d.path); add(d.to); add(d.repo); add(d.name);
  }
  if (parts.length === 0) return null;
  const text = parts.join('\n');
  return text.length > MAX_TEXT ? text.slice(0, MAX_TEXT) : text;
}

const TYPES = new Set(['query', 'execute', 'parse', 'result', 'ssh.exec', 'ssh.line', 'ssh.line.denied', 'ssh.stdin.denied', 'git.command', 'git.push', 'file.op', 'file.open', 'file.request', 'ssh.subsystem']);

/** The words of a search (letters, digits, _; at most 16); null when it has none. */
export function searchWords(search: string): string[] | null {
  const words = search.match(/[\p{L}\p{N}_]+/gu);
  return words && words.length > 0 ? words.slice(0, 16) : null;
}

/** A search as an FTS5 query: every word must occur (quoted, so no operator syntax leaks in). */
export function ftsQuery(search: string): string | null {
  return searchWords(search)?.map((w) => `"${w}"`).join(' ') ?? null;
}
