/**
 * Shell-style globs for names such as environment variables: `*` matches any run of
 * characters, `?` one character; everything else is literal.
 */
export function matchesGlob(name: string, glob: string): boolean {
  let re = '^';
  for (const ch of glob) re += ch === '*' ? '.*' : ch === '?' ? '.' : ch.replace(/[.+^${}()|[\]\\]/g, '\\$&');
  return new RegExp(re + '$', 's').test(name);
}
