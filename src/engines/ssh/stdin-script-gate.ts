// A shell reading its commands from stdin (`ssh host sh < script`, `echo 'rm -rf /x' | ssh host
// bash`) would let the exec rules see only "sh". Each stdin chunk is decided before it is
// forwarded, as the command text it completes: the lines it ends, and the line it leaves
// unterminated (judged as if it were complete — a shell runs an unterminated last line at EOF, so
// no prefix the shell could run was let through undecided). The line still open is carried into
// the next decision, so a command split across chunks is judged whole. A refused chunk closes the
// channel (ChannelAbortError): what came before it ran, nothing of it or after it reaches the
// target. Best effort, like any reading of a shell's input: a multi-line construct split across
// chunks (a here-document body, a quoted string with newlines) is judged line by line, which
// errs towards refusing. A chunk a rule holds waits, and everything behind it, until people decide.
import { StringDecoder } from 'node:string_decoder';
import type { Verdict } from '../../policy/types.ts';
import { ChannelAbortError } from './channel-relay.ts';
import { refuses, shownToClient } from './policy-verdict.ts';

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
  private readonly hold: ((verdict: Verdict, text: string) => Promise<Verdict>) | null;
  private readonly decoder = new StringDecoder('utf8');
  /** Text after the last newline so far: the line the shell has not run yet. */
  private open = '';

  /**
   * `decide` returns null when no exec rule could apply; `denied` records a refusal; `hold` waits
   * for people to decide and gives the verdict the chunk goes on under (absent: a hold refuses).
   */
  constructor(decide: (text: string) => Verdict | null, denied: (verdict: Verdict, text: string) => void,
    hold?: (verdict: Verdict, text: string) => Promise<Verdict>) {
    this.decide = decide;
    this.denied = denied;
    this.hold = hold ?? null;
  }

  /**
   * Throws ChannelAbortError when the chunk may not reach the target; a promise when it is held
   * (it rejects with ChannelAbortError unless approved).
   */
  input(chunk: Buffer): Promise<void> | undefined {
    const text = this.open + this.decoder.write(chunk);
    const nl = text.lastIndexOf('\n');
    const rest = nl < 0 ? text : text.slice(nl + 1);
    const verdict = this.decide(text);
    if (verdict?.decision === 'hold' && this.hold && rest.length <= MAX_OPEN_LINE) {
      // Later chunks are read as if this one went through: if it does not, the channel closes.
      this.open = rest;
      return this.hold(verdict, text).then((after) => {
        if (!refuses(after)) return;
        this.denied(after, text);
        throw new ChannelAbortError(shownToClient(after.reason));
      });
    }
    if (verdict && refuses(verdict)) {
      this.denied(verdict, text);
      throw new ChannelAbortError(shownToClient(verdict.reason));
    }
    if (verdict && rest.length > MAX_OPEN_LINE) throw new ChannelAbortError(`a line of more than ${MAX_OPEN_LINE} characters on stdin cannot be checked against the policy`);
    this.open = rest.length > MAX_OPEN_LINE ? '' : rest;
    return undefined;
  }
}
