// The first keyword of each statement in a SQL text, found by a small lexer that knows where
// PostgreSQL's statements end: top-level semicolons, not those inside comments (nested /* */ and
// --), string literals ('…' with '' doubling, E'…' with backslash escapes), quoted identifiers
// ("…") or dollar-quoted bodies ($tag$…$tag$). The tracker asks it whether a text may change
// prepared-statement, cursor or encoding state; it must never miss a statement the server would
// run, so where the server's reading depends on a setting (standard_conforming_strings), both
// readings are taken.
//
// It reads a string, or (SqlChars) the bytes of a long statement in an ASCII-compatible encoding
// without decoding them first (sql-bytes.ts): a 50 MB statement is not copied into a string to
// be lexed.

/** What the lexer reads: a string, or a view of its bytes with the same few methods. */
export type SqlChars = Pick<string, 'length' | 'charCodeAt' | 'indexOf' | 'slice' | 'includes'>;

const Ch = { Tab: 9, Nl: 10, Cr: 13, Space: 32, Quote: 39, DQuote: 34, Dollar: 36, LParen: 40, Star: 42, Dash: 45, Slash: 47, Semi: 59, Backslash: 92 } as const;

function isWordStart(c: number): boolean {
  return (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c === 95 || c >= 128;
}

function isWordPart(c: number): boolean {
  return isWordStart(c) || (c >= 48 && c <= 57) || c === Ch.Dollar;
}

/** Index after the comment starting at i (a `--` or `/*`), or i when none starts there. */
function skipComment(sql: SqlChars, i: number): number {
  const c = sql.charCodeAt(i);
  const n = sql.charCodeAt(i + 1);
  if (c === Ch.Dash && n === Ch.Dash) {
    const eol = sql.indexOf('\n', i + 2);
    return eol < 0 ? sql.length : eol + 1;
  }
  if (c === Ch.Slash && n === Ch.Star) {
    let depth = 1;
    let j = i + 2;
    while (j < sql.length && depth > 0) {
      const a = sql.charCodeAt(j);
      const b = sql.charCodeAt(j + 1);
      if (a === Ch.Slash && b === Ch.Star) { depth++; j += 2; } else if (a === Ch.Star && b === Ch.Slash) { depth--; j += 2; } else j++;
    }
    return j;
  }
  return i;
}

/** Index after the quoted run starting at i (quote char at i); `backslash` escapes when true. */
function skipQuoted(sql: SqlChars, i: number, quote: number, backslash: boolean): number {
  let j = i + 1;
  while (j < sql.length) {
    const c = sql.charCodeAt(j);
    if (backslash && c === Ch.Backslash) { j += 2; continue; }
    if (c === quote) {
      if (sql.charCodeAt(j + 1) === quote) { j += 2; continue; }
      return j + 1;
    }
    j++;
  }
  return j;
}

/** Index after a dollar-quoted body starting at i, or i when `$` here opens none (e.g. `$1`). */
function skipDollarQuoted(sql: SqlChars, i: number): number {
  let j = i + 1;
  if (j < sql.length && isWordStart(sql.charCodeAt(j))) {
    while (j < sql.length && isWordPart(sql.charCodeAt(j)) && sql.charCodeAt(j) !== Ch.Dollar) j++;
  }
  if (sql.charCodeAt(j) !== Ch.Dollar) return i;
  const tag = sql.slice(i, j + 1);
  const close = sql.indexOf(tag, j + 1);
  return close < 0 ? sql.length : close + tag.length;
}

/** E'…' (or e'…'): the E standing alone, not the end of a word like date'…'. */
function isEscapeStringPrefix(sql: SqlChars, quoteAt: number): boolean {
  const e = sql.charCodeAt(quoteAt - 1);
  return (e === 69 || e === 101) && (quoteAt < 2 || !isWordPart(sql.charCodeAt(quoteAt - 2)));
}

function isSpace(c: number): boolean {
  return c === Ch.Space || c === Ch.Tab || c === Ch.Nl || c === Ch.Cr || c === 11 || c === 12;
}

/** Calls `each` with the upper-cased first word of every statement; stops when it returns true. */
function scan(sql: SqlChars, backslashInStrings: boolean, each: (keyword: string) => boolean): boolean {
  let i = 0;
  const len = sql.length;
  while (i < len) {
    // Statement start: blanks, comments and opening parentheses before the first word.
    for (;;) {
      const c = sql.charCodeAt(i);
      if (isSpace(c) || c === Ch.LParen || c === Ch.Semi) { i++; continue; }
      const after = skipComment(sql, i);
      if (after !== i) { i = after; continue; }
      break;
    }
    if (i >= len) return false;
    let w = i;
    while (w < len && isWordPart(sql.charCodeAt(w))) w++;
    if (w > i && each(sql.slice(i, w).toUpperCase())) return true;
    // The rest of the statement, to a top-level semicolon.
    i = w > i ? w : i;
    while (i < len) {
      const c = sql.charCodeAt(i);
      if (c === Ch.Semi) { i++; break; }
      if (c === Ch.Quote) {
        i = skipQuoted(sql, i, Ch.Quote, backslashInStrings || isEscapeStringPrefix(sql, i));
        continue;
      }
      if (c === Ch.DQuote) { i = skipQuoted(sql, i, Ch.DQuote, false); continue; }
      if (c === Ch.Dollar) {
        const prev = i > 0 ? sql.charCodeAt(i - 1) : 0;
        const after = isWordPart(prev) ? i : skipDollarQuoted(sql, i); // a$b is one identifier
        i = after === i ? i + 1 : after;
        continue;
      }
      const after = skipComment(sql, i);
      if (after !== i) { i = after; continue; }
      if (isWordStart(c)) { while (i < len && isWordPart(sql.charCodeAt(i))) i++; continue; }
      i++;
    }
  }
  return false;
}

/**
 * True when some statement of `sql` starts with one of `keywords` (upper case), read both with
 * and without backslash escapes in plain strings (standard_conforming_strings on and off).
 */
export function someStatementStartsWith(sql: SqlChars, keywords: ReadonlySet<string>): boolean {
  const hit = (k: string): boolean => keywords.has(k);
  return scan(sql, false, hit) || (sql.includes('\\') && scan(sql, true, hit));
}

/** The first keyword of each statement (standard_conforming_strings on), for tests and tools. */
export function statementKeywords(sql: string): string[] {
  const out: string[] = [];
  scan(sql, false, (k) => { out.push(k); return false; });
  return out;
}
