// What an SSH exec request asks the target to run, read as the target's shell reads it: sshd hands
// the command line to `$SHELL -c`, so a regex over the text is not enough — `/usr/bin/git-receive-pack`,
// `env git-receive-pack`, `git -c x=y receive-pack` and `sh -c 'git-receive-pack …'` all start a push.
// The line is split into words as a POSIX shell would (quotes, backslashes); anything that would
// make it more than one plain command (expansions, operators, redirections, globs, comments) is
// never taken for a Git service request. Pure: no I/O, unit-tested in test/unit/exec-command.test.ts.

export type GitService = 'git-receive-pack' | 'git-upload-pack' | 'git-upload-archive';

export type ExecRequest =
  /** A Git service on one repository; `via`: the wrappers and git options around it, outermost first. */
  | { kind: 'git'; service: GitService; repoPath: string; via: string[] }
  /** An SFTP server run as a command (`sftp -s /usr/lib/openssh/sftp-server`): speaks SFTP on stdin/stdout. */
  | { kind: 'sftp'; program: string }
  /**
   * Anything else. `shellSyntax`: why the line is more than one plain command (unset when it is one).
   * `mentionsReceivePack`: some word names receive-pack, so it may push without being guarded.
   */
  | { kind: 'exec'; shellSyntax?: string; mentionsReceivePack: boolean };

interface Words {
  words: string[];
  /** Per word: how many leading characters were unquoted (an assignment's `NAME=` must be). */
  plain: number[];
}

/** Splits a command line as `sh -c` would, or says which shell syntax makes it more than one plain command. */
export function shellWords(line: string): Words | { syntax: string; words: string[] } {
  const words: string[] = [];
  const plain: number[] = [];
  let word: string | null = null;
  let plainLen = 0;
  let quoted = false;
  let syntax: string | null = null;
  const flag = (why: string) => { syntax ??= why; };
  const add = (s: string, isQuoted: boolean) => {
    if (word === null) { word = ''; plainLen = 0; quoted = false; }
    if (isQuoted) quoted = true;
    else if (!quoted) plainLen += s.length;
    word += s;
  };
  const end = () => {
    if (word !== null) { words.push(word); plain.push(plainLen); }
    word = null;
  };
  for (let i = 0; i < line.length; i++) {
    const c = line[i]!;
    if (c === ' ' || c === '\t') { end(); continue; }
    if (c === "'") {
      const close = line.indexOf("'", i + 1);
      if (close < 0) { flag('an unterminated quote'); add(line.slice(i + 1), true); break; }
      add(line.slice(i + 1, close), true);
      i = close;
      continue;
    }
    if (c === '"') {
      let s = '';
      let j = i + 1;
      for (; j < line.length && line[j] !== '"'; j++) {
        const d = line[j]!;
        if (d === '$' || d === '`') flag(d === '$' ? 'a $ expansion' : 'a backquoted command');
        if (d === '\\' && j + 1 < line.length && '$`"\\\n'.includes(line[j + 1]!)) {
          j++;
          if (line[j] !== '\n') s += line[j];
          continue;
        }
        s += d;
      }
      if (j >= line.length) flag('an unterminated quote');
      add(s, true);
      i = j;
      continue;
    }
    if (c === '\\') {
      if (i + 1 >= line.length) { flag('a trailing backslash'); break; }
      i++;
      if (line[i] !== '\n') add(line[i]!, true); // backslash-newline is a line continuation
      continue;
    }
    if (c === '\n' || c === '\r') { flag('a newline (several commands)'); end(); continue; }
    if (c === ';' || c === '&' || c === '|') { flag(`"${c}" (several commands)`); end(); continue; }
    if (c === '<' || c === '>') { flag('a redirection'); end(); continue; }
    if (c === '(' || c === ')') { flag('a subshell'); end(); continue; }
    if (c === '`') { flag('a backquoted command'); continue; }
    if (c === '$') { flag('a $ expansion'); add(c, false); continue; }
    if (c === '*' || c === '?' || c === '[' || c === ']') { flag('a glob pattern'); add(c, false); continue; }
    if (c === '{' || c === '}') { flag('a brace expansion'); add(c, false); continue; }
    if (word === null && (c === '#' || c === '~')) { flag(c === '#' ? 'a comment' : 'a ~ expansion'); add(c, false); continue; }
    if (word === null && c === '!') { flag('a negated command'); add(c, false); continue; }
    add(c, false);
  }
  end();
  if (syntax !== null) return { syntax, words };
  return { words, plain };
}

const SERVICES: readonly string[] = ['git-receive-pack', 'git-upload-pack', 'git-upload-archive'];
const SHELLS: readonly string[] = ['sh', 'bash', 'dash', 'ash', 'ksh', 'mksh', 'zsh', 'busybox'];
const SFTP_SERVERS: readonly string[] = ['sftp-server', 'internal-sftp'];
/** `sh -c` inside `sh -c`…: deeper than this is not followed (the line is then a plain exec). */
const MAX_DEPTH = 4;

const basename = (w: string) => w.slice(w.lastIndexOf('/') + 1);
const isAssignment = (w: string, plainLen: number) => {
  const m = /^[A-Za-z_][A-Za-z0-9_]*=/.exec(w);
  return m !== null && m[0].length <= plainLen;
};

/** Reads an exec request's command line: a Git service, an SFTP server, or something else. */
export function recogniseExec(command: string): ExecRequest {
  return recognise(command, 0);
}

function recognise(line: string, depth: number): ExecRequest {
  const split = shellWords(line);
  const mentionsReceivePack = split.words.some((w) => /receive-pack/.test(w));
  if ('syntax' in split) return { kind: 'exec', shellSyntax: split.syntax, mentionsReceivePack };
  const other: ExecRequest = { kind: 'exec', mentionsReceivePack };
  const { words, plain } = split;
  const via: string[] = [];
  let i = 0;
  // Assignments before the command (`GIT_DIR=x git-receive-pack …`) are the shell's, then exec/env/command.
  while (i < words.length && isAssignment(words[i]!, plain[i]!)) via.push(words[i++]!);
  while (i < words.length) {
    const w = words[i]!;
    const name = basename(w);
    if (w === 'exec' || w === 'command') {
      via.push(w);
      i++;
      if (words[i] === '--') i++;
      continue;
    }
    if (name === 'env') {
      const start = i++;
      for (;;) {
        const a = words[i];
        if (a === undefined) return other;
        if (a === '-i' || a === '-' || a === '--ignore-environment') i++;
        else if (a === '-u' || a === '-C' || a === '--unset' || a === '--chdir') i += 2;
        else if (/^--(unset|chdir)=/.test(a)) i++;
        else if (a === '--') { i++; break; }
        else if (a.startsWith('-')) return other; // -S splits strings, -P changes PATH…: not followed
        else if (a.includes('=')) i++;
        else break;
      }
      via.push(words.slice(start, i).join(' '));
      continue;
    }
    if (SHELLS.includes(name) && depth < MAX_DEPTH) {
      // `sh [flags] -c SCRIPT [argv0 args…]`: the script is what runs (its arguments are only
      // reachable through $ expansions, which a plain command does not have).
      let j = i + 1;
      if (name === 'busybox') {
        if (!SHELLS.includes(words[j] ?? '') || words[j] === 'busybox') return other;
        j++;
      }
      let script: string | undefined;
      for (; j < words.length; j++) {
        const a = words[j]!;
        if (/^--(login|noprofile|norc|posix)$/.test(a)) continue;
        if (!/^-[A-Za-z]+$/.test(a)) return other; // `sh script.sh`, `sh` on stdin, -o OPTION…
        if (a.includes('c')) { script = words[j + 1]; break; }
        if (/[oO]/.test(a)) return other;
      }
      if (script === undefined) return other;
      const inner = recognise(script, depth + 1);
      if (inner.kind === 'git') return { ...inner, via: [...via, `${words.slice(i, j + 1).join(' ')}`, ...inner.via] };
      if (inner.kind === 'sftp') return inner;
      return { ...inner, mentionsReceivePack: inner.mentionsReceivePack || mentionsReceivePack };
    }
    break;
  }
  const cmd = words[i];
  if (cmd === undefined) return other;
  const name = basename(cmd);
  if (SFTP_SERVERS.includes(name)) return { kind: 'sftp', program: cmd };
  let service: string | null = null;
  let j = i + 1;
  if (SERVICES.includes(name)) {
    service = name;
    if (cmd !== name) via.push(cmd);
  } else if (name === 'git') {
    const options: string[] = [];
    for (; j < words.length; j++) {
      const a = words[j]!;
      if (a === '-c' || a === '-C' || a === '--git-dir' || a === '--work-tree' || a === '--namespace' || a === '--exec-path' || a === '--config-env') {
        if (words[j + 1] === undefined) return other;
        options.push(a, words[++j]!);
      } else if (/^--(git-dir|work-tree|namespace|exec-path|config-env|attr-source)=/.test(a) || /^-c.+/.test(a)
        || /^(--bare|--no-replace-objects|--literal-pathspecs|--glob-pathspecs|--noglob-pathspecs|--icase-pathspecs|--no-optional-locks|--no-pager|-P|-p|--paginate|--no-advice|--exec-path)$/.test(a)) {
        options.push(a);
      } else {
        break;
      }
    }
    const sub = words[j];
    if (sub === undefined || !SERVICES.includes(`git-${sub}`)) return other;
    service = `git-${sub}`;
    if (options.length > 0 || cmd !== 'git') via.push([cmd, ...options].join(' '));
    j++;
  }
  if (service === null) return other;
  // Exactly one argument, the repository, as git sends it. Options (--stateless-rpc, --advertise-refs…)
  // change what the service speaks, so such a line is not read as a Git exchange.
  const args = words.slice(j);
  if (args.length !== 1 || args[0] === '' || args[0]!.startsWith('-')) return other;
  return { kind: 'git', service: service as GitService, repoPath: args[0]!, via };
}

/** The command a stock git client sends for this service: what a Git-only connection runs on the target. */
export function canonicalGitCommand(service: GitService, repoPath: string): string {
  return `${service} '${repoPath.replaceAll("'", "'\\''")}'`;
}
