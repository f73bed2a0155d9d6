// Claim patterns of trust policies: exact text, or globs that know the claim's structure. A
// value is a run of segments between separators — `/` in paths (repository, ref, workflow_ref,
// project_path), and `:` as well in `sub` ("repo:org/app:ref:refs/heads/main"). `*` never crosses
// a separator, so "repo:org/*" cannot reach into the context part of a sub
// ("repo:org/x:pull_request"); `**` is the one way to match across separators.

/** The characters that separate segments of a claim's value. */
export function claimSeparators(claim: string): string {
  return claim === 'sub' ? ':/' : '/';
}

const compiled = new Map<string, RegExp>();
const regexText = (s: string): string => s.replace(/[\\^$.|?+()[\]{}*-]/g, '\\$&');

/**
 * Does `value` match `pattern`? Without `*` the comparison is exact (and case-sensitive). `*`
 * matches characters within one segment, `**` any characters, separators included (neither
 * matches a control character); a `*` or
 * `**` that is a whole segment stands for at least one character, so "org/*" never admits
 * "org/" and "repo:org/*:ref:*" never admits an empty ref.
 */
export function matchesClaimPattern(value: string, pattern: string, separators = '/'): boolean {
  if (!pattern.includes('*')) return value === pattern;
  const key = `${separators}\u0000${pattern}`;
  let re = compiled.get(key);
  if (!re) {
    // Wildcards never match control characters: no name a pattern is written for holds one.
    const within = `[^${regexText(separators)}\\x00-\\x1f\\x7f]`;
    const any = '[^\\x00-\\x1f\\x7f]';
    const isSeparator = (ch: string | undefined): boolean => ch === undefined || separators.includes(ch);
    let src = '';
    for (let i = 0; i < pattern.length;) {
      if (pattern[i] !== '*') {
        src += regexText(pattern[i]);
        i++;
        continue;
      }
      const double = pattern[i + 1] === '*';
      const end = i + (double ? 2 : 1);
      // Runs of three or more stars read as `**` followed by `*`s: still "anything".
      const wholeSegment = isSeparator(pattern[i - 1]) && (isSeparator(pattern[end]) || pattern[end] === '*');
      src += `${double ? any : within}${wholeSegment ? '+' : '*'}`;
      i = end;
    }
    re = new RegExp(`^${src}$`, 's');
    if (compiled.size > 10_000) compiled.clear(); // patterns come from configuration; bound it anyway
    compiled.set(key, re);
  }
  return re.test(value);
}

/** The pattern's segments, split at every separator (the separators themselves dropped). */
export function patternSegments(pattern: string, separators: string): string[] {
  const out: string[] = [];
  let current = '';
  for (const ch of pattern) {
    if (separators.includes(ch)) {
      out.push(current);
      current = '';
    } else current += ch;
  }
  out.push(current);
  return out;
}

/**
 * True when the first `count` segments of `pattern` are written out — non-empty, no wildcard —
 * so that every value it matches starts with exactly that text and a separator (or is the
 * pattern itself, when the pattern has no wildcard at all).
 */
export function pinsLeadingSegments(pattern: string, count: number, separators: string): boolean {
  if (pattern === '') return false;
  if (!pattern.includes('*')) return true;
  const segments = patternSegments(pattern, separators);
  // The pinned part must be followed by a separator: "org*" or "repo:org" + "**" pin nothing.
  if (segments.length <= count) return false;
  return segments.slice(0, count).every((s) => s !== '' && !s.includes('*'));
}
