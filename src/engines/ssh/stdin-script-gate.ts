// A shell reading its commands from stdin (`ssh host sh < script`, `echo 'rm -rf /x' | ssh host
// bash`) would let the exec rules see only "sh". Each stdin chunk is decided before it is
// forwarded, as the command text it completes: the lines it ends, and the line it leaves
// unterminated (judged as if it were complete — a shell runs an unterminated last line at EOF, so
// no prefix the shell could run was let through undecided). The line still open is carried into
// the next decision, so a command split across chunks is judged whole. A refused chunk closes the
// channel (ChannelAbortError): what came before it ran, nothing of it or after it reaches the
// target. Best effort, like any reading of a shell's input: a multi-line construct split across
// chunks (a here-document body, a quoted string with newlines) is judged line by line, which
// errs towards refusing.
import { StringDecoder } from 'node:string_decoder';
import type { Verdict } from '../../policy/types.ts';
import { ChannelAbortError } from './channel-relay.ts';
import { refuses } from './policy-verdict.ts';

/** Interpreters (as exec-stdin.ts names them) whose stdin is shell commands. */
const SHELL_READERS = new Set(['sh', 'bash', 'dash', 'zsh', 'ksh', 'mksh', 'ash', 'yash', 'posh', 'rbash', 'sudo', 'doas', 'su']);
/** Longest unterminated line carried between chunks; past it the input cannot be judged whole. */
const MAX_OPEN_LINE = 64 * 1024;

export function readsShellCommands(interpreter: string | null): boolean {
  return interpreter !== null && SHELL_READERS.has(interpreter);
}

export class StdinScriptGate {
  private readonly decide: (text: string) => Verdict | null;
  private readonly denied: (verdict: Verdict, text: string) => void;
  private readonly decoder = new StringDecoder('utf8');
  /** Text after the last newline so far: the line the shell has not run yet. */
  private open = '';

  /** `decide` returns null when no exec rule could apply; `denied` records a refusal. */
  constructor(decide: (text: string) => Verdict | null, denied: (verdict: Verdict, text: string) => void) {
    this.decide = decide;
    this.denied = denied;
  }

  /** Throws ChannelAbortError when the chunk may not reach the target. */
  input(chunk: Buffer): void {
    const text = this.open + this.decoder.write(chunk);
    const nl = text.lastIndexOf('\n');
    const rest = nl < 0 ? text : text.slice(nl + 1);
    const verdict = this.decide(text);
    if (verdict && refuses(verdict)) {
      this.denied(verdict, text);
      throw new ChannelAbortError(verdict.reason.replace(/[\x00-\x08\x0a-\x1f\x7f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`));
    }
    if (verdict && rest.length > MAX_OPEN_LINE) throw new ChannelAbortError(`a line of more than ${MAX_OPEN_LINE} characters on stdin cannot be checked against the policy`);
    this.open = rest.length > MAX_OPEN_LINE ? '' : rest;
  }
}
