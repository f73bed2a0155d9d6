/**
 * Shell-style globs for names such as environment variables, connections and commands: `*`
 * matches any run of characters (`/` and newlines included), `?` one character; everything else
 * is literal. Compile once where a glob is used per message.
 */
export function compileGlob(glob: string, options: { caseless?: boolean } = {}): (value: string) => boolean {
  let re = '^';
  for (const ch of glob) re += ch === '*' ? '[\\s\\S]*' : ch === '?' ? '[\\s\\S]' : ch.replace(/[.+^${}()|[\]\\]/g, '\\$&');
  const compiled = new RegExp(re + '$', options.caseless ? 'i' : '');
  return (value) => compiled.test(value);
}

export function matchesGlob(name: string, glob: string): boolean {
  return compileGlob(glob)(name);
}
