// Stdin of a command run without a pty (`ssh gw bash < deploy.sh`, `echo 'rm -rf …' | ssh gw sh`,
// the commonest way agents and CI run scripts): recorded like terminal input. Every byte is
// counted and hashed, with a bounded sample, in the channel's `ssh.exit`. When the command is an
// interpreter that reads its program from stdin (a shell, python, perl, psql, …), every chunk is
// also recorded whole as `ssh.stdin` and forwarded only once that record is durable: each line
// the interpreter runs is in the chain before it reaches the target, where a policy can see it.
import type { SessionRecording } from '../../recorder/recorder.ts';
import { EdgeMasker } from '../../masking/detectors.ts';
import { RECORD_DETECTORS } from '../../masking/event-masking.ts';
import { BoundedCapture, type CapturedOutput } from './output-capture.ts';
import { maskedInput } from './terminal-recorder.ts';

export class ExecStdinRecorder {
  private readonly rec: SessionRecording;
  private readonly channel: number;
  private readonly capture: BoundedCapture;
  /** A secret cut by a chunk edge of the script is masked in the records (see EdgeMasker). */
  private readonly masker = new EdgeMasker({ detectors: RECORD_DETECTORS });
  /** The interpreter whose program arrives on stdin (null: stdin is data, only sampled). */
  readonly interpreter: string | null;

  constructor(rec: SessionRecording, channel: number, sampleBytes: number, interpreter: string | null) {
    this.rec = rec;
    this.channel = channel;
    this.capture = new BoundedCapture(sampleBytes);
    this.interpreter = interpreter;
  }

  input(chunk: Buffer): Promise<void> | undefined {
    this.capture.add(chunk);
    if (this.interpreter === null) return undefined;
    return this.rec.beforeForward('ssh.stdin', maskedInput(this.masker, this.channel, chunk));
  }

  get bytes(): number { return this.capture.bytes; }

  result(): CapturedOutput { return this.capture.result(); }
}

/** Shells: the program comes from stdin unless -c gives it or a script file is named. */
const SHELLS = new Set(['sh', 'bash', 'dash', 'zsh', 'ksh', 'mksh', 'ash', 'yash', 'posh', 'fish', 'csh', 'tcsh', 'rbash']);
/** Interpreters that run a program from stdin when given no script (or `-`), and no inline program option. */
const SCRIPT_INTERPRETERS: Record<string, string[]> = {
  python: ['-c', '-m'], pypy: ['-c', '-m'], perl: ['-e', '-E'], ruby: ['-e'], node: ['-e', '-p', '--eval', '--print'],
  nodejs: ['-e', '-p', '--eval', '--print'], php: ['-r'], lua: ['-e'], luajit: ['-e'], tclsh: [], wish: [], bc: [], dc: ['-e'],
  Rscript: ['-e'], R: ['-e'], irb: [], jshell: [], osascript: ['-e'], pwsh: ['-c', '-command', '-Command'],
};
/** Clients that read commands from stdin unless one is given inline (or from a file). */
const COMMAND_CLIENTS: Record<string, string[]> = {
  psql: ['-c', '--command', '-f', '--file'], mysql: ['-e', '--execute'], mariadb: ['-e', '--execute'], sqlite3: [],
  'redis-cli': [], mongosh: ['--eval', '-f', '--file'], mongo: ['--eval'], clickhouse: ['-q', '--query'], 'clickhouse-client': ['-q', '--query'],
  cqlsh: ['-e', '--execute', '-f', '--file'], ftp: [], sftp: ['-b'], gdb: ['-ex', '-x', '--batch'], at: ['-f'], batch: ['-f'],
  su: ['-c', '--command'],
};
/** Wrappers that run the command after them, with their options that take a value. */
const WRAPPERS: Record<string, string[]> = {
  env: ['-u', '-C', '-S', '--unset', '--chdir'], exec: ['-a'], command: [], builtin: [], eval: [], nohup: [], time: ['-f', '-o'],
  nice: ['-n'], ionice: ['-c', '-n', '-p'], stdbuf: ['-i', '-o', '-e'], timeout: ['-s', '-k', '--signal', '--kill-after'],
  setsid: [], unbuffer: [], chroot: [], xargs: ['-a', '-d', '-E', '-I', '-L', '-n', '-P', '-s'],
  sudo: ['-u', '-g', '-C', '-h', '-p', '-r', '-t', '-D', '-U', '-R', '-T'], doas: ['-u', '-C'],
};
/** Wrappers followed by an operand of their own before the command (a duration, a directory). */
const WRAPPER_OPERAND = new Set(['timeout', 'chroot']);

/**
 * The interpreter (program name) among the commands of `command` that reads its program or
 * commands from stdin, or null. Errs towards yes: over-recording costs a commit per chunk,
 * under-recording loses what ran.
 */
export function stdinInterpreter(command: string): string | null {
  for (const words of simpleCommands(command)) {
    const found = interpreterOf(words);
    if (found) return found;
  }
  return null;
}

function interpreterOf(words: string[]): string | null {
  let i = 0;
  for (;;) {
    // Leading variable assignments, then wrappers with their options.
    while (i < words.length && /^[A-Za-z_][A-Za-z0-9_]*=/.test(words[i]!)) i++;
    if (i >= words.length) return null;
    const wrapper = basename(words[i]!);
    const valued = WRAPPERS[wrapper];
    if (!valued) break;
    let shell = false;
    for (i++; i < words.length && words[i]!.startsWith('-') && words[i] !== '--'; i++) {
      if (valued.includes(words[i]!)) i++;
      else if ((wrapper === 'sudo' || wrapper === 'doas') && /^-[a-zA-Z]*[si]/.test(words[i]!)) shell = true;
    }
    if (words[i] === '--') i++;
    if (WRAPPER_OPERAND.has(wrapper)) i++;
    // sudo -s / sudo -i without a command: a shell reading stdin.
    if (shell && i >= words.length) return wrapper;
  }
  const program = basename(words[i]!);
  const args = words.slice(i + 1);
  const family = /^python[0-9.]*$/.test(program) ? 'python' : /^pypy[0-9.]*$/.test(program) ? 'pypy' : /^(perl|ruby|php|lua)[0-9.]*$/.test(program) ? program.replace(/[0-9.]+$/, '') : program;
  if (SHELLS.has(family)) {
    if (args.some((a) => /^-[a-zA-Z]*c[a-zA-Z]*$/.test(a))) return null;
    if (args.some((a) => /^-[a-zA-Z]*s[a-zA-Z]*$/.test(a))) return program;
    return firstOperand(args, ['-o', '-O', '+o', '+O']) === null ? program : null;
  }
  const inline = SCRIPT_INTERPRETERS[family];
  if (inline) {
    if (args.some((a) => inline.includes(a) || inline.some((o) => o.length === 2 && a.startsWith(o) && a.length > 2 && !a.startsWith('--')))) return null;
    const operand = firstOperand(args, ['-W', '-X', '-I', '-r', '--require', '-M', '-x']);
    return operand === null || operand === '-' ? program : null;
  }
  const inlineCommands = COMMAND_CLIENTS[family];
  if (inlineCommands) {
    const fromFile = args.findIndex((a) => inlineCommands.includes(a));
    if (fromFile >= 0 && args[fromFile + 1] !== '-') return null;
    if (args.some((a) => inlineCommands.some((o) => o.startsWith('--') && a.startsWith(`${o}=`)))) return null;
    return program;
  }
  return null;
}

/** The first argument that is not an option (nor the value of one in `withValue`), or null. */
function firstOperand(args: string[], withValue: string[]): string | null {
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === '--') return args[i + 1] ?? null;
    if (a === '-') return a;
    if (withValue.includes(a)) { i++; continue; }
    if (a.startsWith('-') || a.startsWith('+')) continue;
    return a;
  }
  return null;
}

function basename(word: string): string {
  return word.slice(word.lastIndexOf('/') + 1);
}

/**
 * Splits a shell command line into simple commands (at `;`, `&`, `|`, `&&`, `||`, newlines,
 * `(`, `)`, `{`, `}`, backquotes and `$(`), each as words with quotes removed. Approximate on
 * purpose: it only has to find program names and their arguments.
 */
export function simpleCommands(command: string): string[][] {
  const out: string[][] = [];
  let words: string[] = [];
  let word: string | null = null;
  const endWord = () => { if (word !== null) { words.push(word); word = null; } };
  const endCommand = () => { endWord(); if (words.length) out.push(words); words = []; };
  for (let i = 0; i < command.length; i++) {
    const c = command[i]!;
    if (c === "'") {
      const j = command.indexOf("'", i + 1);
      word = (word ?? '') + command.slice(i + 1, j < 0 ? command.length : j);
      i = j < 0 ? command.length : j;
    } else if (c === '"') {
      let j = i + 1;
      let text = '';
      while (j < command.length && command[j] !== '"') {
        if (command[j] === '\\' && j + 1 < command.length) j++;
        text += command[j];
        j++;
      }
      word = (word ?? '') + text;
      i = j;
    } else if (c === '\\' && i + 1 < command.length) {
      word = (word ?? '') + command[++i];
    } else if (c === ' ' || c === '\t') {
      endWord();
    } else if (';&|\n()`{}'.includes(c)) {
      endCommand();
    } else if (c === '$' && command[i + 1] === '(') {
      endCommand();
      i++;
    } else if (c === '<' || c === '>') {
      // A redirection (with its file descriptor, as in 2>&1): skip it and its target word.
      if (word !== null && /^\d+$/.test(word)) word = null;
      endWord();
      let j = i + 1;
      while (j < command.length && '<>&'.includes(command[j]!)) j++;
      while (j < command.length && command[j] === ' ') j++;
      while (j < command.length && !' \t;&|\n()'.includes(command[j]!)) j++;
      i = j - 1;
    } else {
      word = (word ?? '') + c;
    }
  }
  endCommand();
  return out;
}
