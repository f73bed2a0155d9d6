// What a command line runs, read the way a POSIX shell splits it: quotes and backslashes removed,
// `;`, `&&`, `||`, `|`, `&`, newlines and parentheses separating simple commands, command
// substitutions ($(…), `…`) read as commands of their own, and wrappers unwrapped (env, sudo,
// nohup, timeout, xargs, sh -c '…', eval …) so that the command they run is judged too. A word the
// gateway cannot know before the shell runs (a variable, a glob in the program name, an arithmetic
// or process substitution) makes the line opaque: rules that could apply then refuse it rather
// than guess. This is a reading of the text, not a sandbox: docs/policy.md says what it cannot see.

export interface SimpleCommand {
  /** The program as the shell would look it up, without its directory ("/bin/rm" → "rm"). */
  program: string;
  /** argv with the program normalised, quotes removed. */
  argv: string[];
  /** "rm -rf /tmp/x": argv joined by single spaces, what `commands:` globs match. */
  line: string;
}

export type ExecFacts = { ok: true; commands: SimpleCommand[] } | { ok: false; error: string; commands: SimpleCommand[] };

const MAX_DEPTH = 8;

export function execFacts(commandLine: string): ExecFacts {
  const out: SimpleCommand[] = [];
  try {
    readScript(commandLine, out, 0);
    return { ok: true, commands: out };
  } catch (err) {
    return { ok: false, error: (err as Error).message, commands: out };
  }
}

class Opaque extends Error {}

interface Word { text: string; /** Contains something only the running shell can resolve. */ dynamic: boolean }

function readScript(script: string, out: SimpleCommand[], depth: number): void {
  if (depth > MAX_DEPTH) throw new Opaque('commands nested too deeply to read');
  for (const words of splitCommands(script, out, depth)) addCommand(words, out, depth);
}

const SEPARATORS = new Set([';', '&', '|', '\n', '(', ')']);

/**
 * Splits a script into simple commands (lists of words), reading command substitutions inside it
 * as commands too. Redirections and their targets are dropped; here-document bodies are data.
 */
function splitCommands(s: string, out: SimpleCommand[], depth: number): Word[][] {
  const commands: Word[][] = [];
  let words: Word[] = [];
  let word = '';
  let inWord = false;
  let dynamic = false;
  let skipNext = false; // the next word is a redirection target
  const heredocs: string[] = [];
  const endWord = () => {
    if (!inWord) return;
    if (skipNext) skipNext = false;
    else words.push({ text: word, dynamic });
    word = '';
    inWord = false;
    dynamic = false;
  };
  const endCommand = () => {
    endWord();
    if (words.length > 0) commands.push(words);
    words = [];
  };
  let i = 0;
  while (i < s.length) {
    const c = s[i]!;
    if (c === '\\') {
      if (s[i + 1] === '\n') { i += 2; continue; } // line continuation
      if (i + 1 < s.length) { word += s[i + 1]; inWord = true; }
      i += 2;
      continue;
    }
    if (c === "'") {
      const end = s.indexOf("'", i + 1);
      if (end < 0) throw new Opaque('an unterminated single quote');
      word += s.slice(i + 1, end);
      inWord = true;
      i = end + 1;
      continue;
    }
    if (c === '"') {
      i++;
      inWord = true;
      while (i < s.length && s[i] !== '"') {
        if (s[i] === '\\' && i + 1 < s.length && '$`"\\\n'.includes(s[i + 1]!)) { if (s[i + 1] !== '\n') word += s[i + 1]; i += 2; continue; }
        if (s[i] === '$' || s[i] === '`') {
          const r = readExpansion(s, i, out, depth);
          i = r.end;
          dynamic = true;
          continue;
        }
        word += s[i];
        i++;
      }
      if (i >= s.length) throw new Opaque('an unterminated double quote');
      i++;
      continue;
    }
    if (c === '$' || c === '`') {
      const r = readExpansion(s, i, out, depth);
      i = r.end;
      inWord = true;
      dynamic = true;
      continue;
    }
    if (c === '#' && !inWord) {
      while (i < s.length && s[i] !== '\n') i++;
      continue;
    }
    if (c === ' ' || c === '\t') { endWord(); i++; continue; }
    if (c === '<' && s[i + 1] === '<' && s[i + 2] !== '<') {
      // A here-document: its body (the lines after this one, up to the delimiter) is data.
      endWord();
      let j = i + 2;
      if (s[j] === '-') j++;
      while (s[j] === ' ' || s[j] === '\t') j++;
      const m = /^(['"]?)([^\s'";&|<>()]+)\1/.exec(s.slice(j));
      if (!m) throw new Opaque('a here-document without a delimiter');
      heredocs.push(m[2]!);
      i = j + m[0].length;
      continue;
    }
    if (c === '<' || c === '>') {
      // A redirection: `2>&1`'s digits were read as a word: drop them; the target follows.
      if (inWord && /^\d+$/.test(word)) { word = ''; inWord = false; }
      else endWord();
      let j = i + 1;
      if (s[j] === '>' || s[j] === '|' || (c === '<' && s[j] === '<')) j++;
      if (s[j] === '&') { j++; while (/[\d-]/.test(s[j] ?? '')) j++; i = j; continue; }
      if (s[j] === '(') throw new Opaque('a process substitution');
      skipNext = true;
      i = j;
      continue;
    }
    if (SEPARATORS.has(c)) {
      endCommand();
      if (c === '\n' && heredocs.length > 0) i = skipHeredocs(s, i + 1, heredocs.splice(0));
      else i++;
      continue;
    }
    if (!inWord && c === '{' && /[\s;]/.test(s[i + 1] ?? ' ')) { i++; continue; } // a { … } group
    if (!inWord && c === '}' && (i + 1 >= s.length || /[\s;&|)]/.test(s[i + 1]!))) { endCommand(); i++; continue; }
    word += c;
    inWord = true;
    i++;
  }
  endCommand();
  return commands;
}

function skipHeredocs(s: string, from: number, delimiters: string[]): number {
  let i = from;
  for (const d of delimiters) {
    for (;;) {
      if (i >= s.length) return i;
      const nl = s.indexOf('\n', i);
      const line = s.slice(i, nl < 0 ? s.length : nl).replace(/^\t+/, '');
      i = nl < 0 ? s.length : nl + 1;
      if (line === d) break;
    }
  }
  return i;
}

/** `$name`, `${…}`, `$(…)`, `$((…))`, `` `…` ``: substitutions are read as commands; the word becomes dynamic. */
function readExpansion(s: string, i: number, out: SimpleCommand[], depth: number): { end: number } {
  if (s[i] === '`') {
    let j = i + 1;
    let inner = '';
    while (j < s.length && s[j] !== '`') {
      if (s[j] === '\\' && j + 1 < s.length) { inner += s[j + 1]; j += 2; continue; }
      inner += s[j];
      j++;
    }
    if (j >= s.length) throw new Opaque('an unterminated backquote');
    readScript(inner, out, depth + 1);
    return { end: j + 1 };
  }
  const next = s[i + 1];
  if (next === '(' && s[i + 2] === '(') return { end: closing(s, i + 1, '(', ')') + 1 }; // arithmetic
  if (next === '(') {
    const end = closing(s, i + 1, '(', ')');
    readScript(s.slice(i + 2, end), out, depth + 1);
    return { end: end + 1 };
  }
  if (next === '{') return { end: closing(s, i + 1, '{', '}') + 1 };
  let j = i + 1;
  if (j < s.length && /[@*#?$!\-0-9]/.test(s[j]!)) return { end: j + 1 };
  while (j < s.length && /[A-Za-z0-9_]/.test(s[j]!)) j++;
  return { end: j };
}

/** Index of the bracket closing the one at `open`, minding quotes; throws when there is none. */
function closing(s: string, open: number, o: string, c: string): number {
  let level = 0;
  for (let j = open; j < s.length; j++) {
    const ch = s[j];
    if (ch === '\\') { j++; continue; }
    if (ch === "'") { const e = s.indexOf("'", j + 1); if (e < 0) break; j = e; continue; }
    if (ch === o) level++;
    else if (ch === c && --level === 0) return j;
  }
  throw new Opaque(`an unterminated ${o === '(' ? '$(…)' : '${…}'}`);
}

/** Programs that run the command given in their arguments; their own options are skipped. */
/**
 * `positional`: arguments before the command (flock's lock file); `scripts`: options whose value is
 * a shell script (`su -c '…'`); `noCommand`: the wrapper runs no command given as arguments.
 */
const WRAPPERS: Record<string, { optionsWithValue: string[]; positional?: number; scripts?: string[]; noCommand?: boolean }> = {
  env: { optionsWithValue: ['-u', '--unset', '-C', '--chdir', '-S', '--split-string'] },
  sudo: { optionsWithValue: ['-u', '--user', '-g', '--group', '-C', '--close-from', '-D', '--chdir', '-h', '--host', '-p', '--prompt', '-r', '--role', '-t', '--type', '-T', '--command-timeout', '-U', '--other-user'] },
  doas: { optionsWithValue: ['-u', '-C'] },
  nohup: { optionsWithValue: [] },
  nice: { optionsWithValue: ['-n', '--adjustment'] },
  ionice: { optionsWithValue: ['-c', '-n', '-p', '--class', '--classdata'] },
  time: { optionsWithValue: ['-f', '--format', '-o', '--output'] },
  timeout: { optionsWithValue: ['-k', '--kill-after', '-s', '--signal'] },
  command: { optionsWithValue: [] },
  exec: { optionsWithValue: ['-a'] },
  builtin: { optionsWithValue: [] },
  xargs: { optionsWithValue: ['-a', '--arg-file', '-d', '--delimiter', '-E', '-e', '-I', '-i', '-L', '-l', '-n', '--max-args', '-P', '--max-procs', '-s', '--max-chars'] },
  stdbuf: { optionsWithValue: ['-i', '-o', '-e'] },
  chroot: { optionsWithValue: [] },
  busybox: { optionsWithValue: [] },
  watch: { optionsWithValue: ['-n', '--interval', '-d'] },
  strace: { optionsWithValue: ['-e', '-o', '-p', '-s', '-u'] },
  setsid: { optionsWithValue: [] },
  nsenter: { optionsWithValue: ['-t', '--target', '-S', '--setuid', '-G', '--setgid'] },
  unshare: { optionsWithValue: ['-S', '--setuid', '-G', '--setgid', '-R', '--root', '-w', '--wd'] },
  taskset: { optionsWithValue: [], positional: 1 }, // the CPU mask or list
  chrt: { optionsWithValue: ['-T', '--sched-runtime', '-P', '--sched-period', '-D', '--sched-deadline'], positional: 1 }, // the priority
  flock: { optionsWithValue: ['-w', '--timeout', '--wait', '-E', '--conflict-exit-code'], positional: 1, scripts: ['-c', '--command'] }, // the lock file
  su: { optionsWithValue: ['-s', '--shell', '-g', '--group', '-G', '--supp-group', '-w', '--whitelist-environment'], scripts: ['-c', '--command', '--session-command'], noCommand: true },
  runuser: { optionsWithValue: ['-u', '--user', '-s', '--shell', '-g', '--group', '-G', '--supp-group', '-w', '--whitelist-environment'], scripts: ['-c', '--command', '--session-command'] },
  script: { optionsWithValue: ['-E', '--echo', '-I', '--log-in', '-O', '--log-out', '-B', '--log-io', '-T', '--log-timing', '-m', '--logging-format'], scripts: ['-c', '--command'], noCommand: true },
};
/**
 * Reserved words that may come before a command (`! cmd`, `if cmd`, `then cmd`, `while cmd`, `do
 * cmd`…): the command after them is what runs.
 */
const RESERVED_BEFORE_COMMAND = new Set(['!', 'if', 'then', 'else', 'elif', 'while', 'until', 'do', 'coproc']);
const SHELLS = new Set(['sh', 'bash', 'dash', 'zsh', 'ksh', 'ash', 'mksh', 'fish', 'busybox-sh']);

function addCommand(words: Word[], out: SimpleCommand[], depth: number): void {
  let rest = words;
  // Leading assignments (VAR=value cmd …) set the environment of the command; reserved words
  // before it (`! cmd`, `then cmd`) are the shell's.
  for (;;) {
    if (rest.length > 0 && /^[A-Za-z_][A-Za-z0-9_]*=/.test(rest[0]!.text)) rest = rest.slice(1);
    else if (rest.length > 0 && !rest[0]!.dynamic && RESERVED_BEFORE_COMMAND.has(rest[0]!.text)) rest = rest.slice(1);
    else break;
  }
  if (rest.length === 0) return;
  const first = rest[0]!;
  if (first.dynamic || /[*?[{]/.test(first.text)) throw new Opaque(`the program name ${JSON.stringify(first.text)} is only known when the shell runs it`);
  const program = baseName(first.text);
  const argv = [program, ...rest.slice(1).map((w) => w.text)];
  out.push({ program, argv, line: argv.join(' ') });
  if (program === 'eval') {
    readScript(rest.slice(1).map((w) => w.text).join(' '), out, depth + 1);
    return;
  }
  if (program === 'source' || program === '.') throw new Opaque(`${program} runs a script file the gateway cannot read`);
  if (SHELLS.has(program)) {
    const script = shellScriptArgument(rest.slice(1));
    if (script !== null) readScript(script, out, depth + 1);
    return;
  }
  if (program === 'find') {
    // find -exec cmd … ; (or +): cmd runs once per file found, with the file names appended.
    for (let k = 1; k < rest.length; k++) {
      if (!['-exec', '-execdir', '-ok', '-okdir'].includes(rest[k]!.text)) continue;
      let end = k + 1;
      while (end < rest.length && rest[end]!.text !== ';' && rest[end]!.text !== '+') end++;
      const inner = rest.slice(k + 1, end).map((w) => (w.text === '{}' ? { text: '…', dynamic: true } : w));
      if (inner.length > 0) addCommand(inner, out, depth + 1);
      k = end;
    }
    return;
  }
  const wrapper = WRAPPERS[program];
  if (!wrapper) return;
  if (wrapper.scripts) {
    // su -c '…', flock FILE -c '…', script -qc '…': the option's value is run by a shell.
    for (let j = 1; j < rest.length; j++) {
      const t = rest[j]!.text;
      const eq = t.indexOf('=');
      if (t.startsWith('--') && eq > 0 && wrapper.scripts.includes(t.slice(0, eq))) {
        if (rest[j]!.dynamic) throw new Opaque(`${program} ${t.slice(0, eq)} with a script only known when the shell runs it`);
        readScript(t.slice(eq + 1), out, depth + 1);
        continue;
      }
      if (!wrapper.scripts.includes(t) && !(wrapper.scripts.includes('-c') && /^-[A-Za-z]*c$/.test(t))) continue;
      const script = rest[j + 1];
      if (!script) throw new Opaque(`${program} ${t} without a script`);
      if (script.dynamic) throw new Opaque(`${program} ${t} with a script only known when the shell runs it`);
      readScript(script.text, out, depth + 1);
      return;
    }
  }
  if (wrapper.noCommand) return;
  let k = 1;
  for (; k < rest.length; k++) {
    const t = rest[k]!.text;
    if (t === '--') { k++; break; }
    if (program === 'env' && /^[A-Za-z_][A-Za-z0-9_]*=/.test(t)) continue;
    if (!t.startsWith('-') || t === '-') break;
    if (wrapper.optionsWithValue.includes(t)) k++;
  }
  if (program === 'timeout' && k < rest.length) k++; // the duration
  k += wrapper.positional ?? 0;
  if (program === 'chroot' && k < rest.length) k++; // the new root
  if (program === 'busybox' && k >= rest.length) return;
  const inner = rest.slice(k);
  // xargs appends arguments it reads from its input, which the gateway does not see.
  if (program === 'xargs' && inner.length > 0) inner.push({ text: '…', dynamic: true });
  if (inner.length > 0) addCommand(inner, out, depth + 1);
}

/** The script of `sh -c 'script'` (options may come first); null when the shell reads a file or stdin. */
function shellScriptArgument(args: Word[]): string | null {
  // -c is a flag: the script is the first operand after all options (`sh -c -e '…'`, `sh -c -- '…'`).
  let c = false;
  let k = 0;
  for (; k < args.length; k++) {
    const t = args[k]!.text;
    if (t === '--') { k++; break; }
    if ((!t.startsWith('-') && !t.startsWith('+')) || t === '-' || t === '+') break;
    if (/^-[A-Za-z]*c[A-Za-z]*$/.test(t)) c = true;
    if (t === '-o' || t === '+o' || t === '-O' || t === '+O' || t === '--rcfile' || t === '--init-file') k++;
  }
  if (!c) return null; // a script file or stdin: its content is not here
  const script = args[k];
  if (!script) throw new Opaque('sh -c without a script');
  if (script.dynamic) throw new Opaque('sh -c with a script only known when the shell runs it');
  return script.text;
}

function baseName(path: string): string {
  const cut = path.replace(/\/+$/, '');
  const slash = cut.lastIndexOf('/');
  return slash >= 0 ? cut.slice(slash + 1) : cut;
}
