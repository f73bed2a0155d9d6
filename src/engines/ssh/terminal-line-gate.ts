// Lines typed into an interactive shell, decided at Enter like exec commands. The gateway sees
// keystrokes, not the shell's line buffer, so it follows the editing it can be sure of (typing,
// bracketed pastes, backspace, Ctrl-U, Ctrl-W, Ctrl-C) and calls a line it cannot follow (history recall,
// completion, cursor movement, other control keys) unreadable: such a line is refused when a deny
// or hold rule on commands could apply, and the person is asked to type it again plainly. This is
// best effort by nature — a shell can build a command in ways no keystroke reader sees (aliases,
// functions, `eval` of a variable, a script written and then run) — which is why connections
// where agents must be policed can refuse shells outright (`shell: true` rules) and allow exec only.
//
// A refused line never gets its Enter: the gateway sends Ctrl-E Ctrl-U instead, which empties the
// line in readline-style editors (end of line, kill to its start) and in a terminal's cooked mode
// (Ctrl-U is the kill character there, and Ctrl-E just goes with the line). Ctrl-C would too, but
// its SIGINT makes the terminal discard whatever input follows, and input typed after a refused
// line is decided and forwarded like any other.
import { StringDecoder } from 'node:string_decoder';
import type { Verdict } from '../../policy/types.ts';

const CTRL_C = 0x03;
const CTRL_D = 0x04;
const BACKSPACE = 0x08;
const TAB = 0x09;
const LF = 0x0a;
const FORM_FEED = 0x0c; // Ctrl-L clears the screen, not the line
const CR = 0x0d;
const CTRL_U = 0x15;
const CTRL_V = 0x16;
const CTRL_W = 0x17;
const ESC = 0x1b;
const DEL = 0x7f;
const RANK = { allow: 0, audit: 1, hold: 2, deny: 3 } as const;
/** Longest line followed; past it the line is unreadable. */
const MAX_LINE = 16 * 1024;

/** What the gate says about one submitted line. */
export interface SubmittedLine {
  /** The line as reconstructed (null: it could not be followed, `why` says what broke it). */
  text: string | null;
  why?: string;
}

/**
 * Where a chunk of terminal input must stop: `at` is the offset of the Enter of a line whose
 * verdict refuses or holds it (everything before it may be forwarded).
 */
export interface LineStop { at: number; line: SubmittedLine; verdict: Verdict }

export class TerminalLineGate {
  private readonly decide: (line: SubmittedLine) => Verdict | null;
  private decoder = new StringDecoder('utf8');
  private line = '';
  private unreadable: string | null = null;
  /** Inside an escape sequence: 1 after ESC, 2 inside CSI (ESC [ …), 3 after ESC O. */
  private escape = 0;
  private csi = '';
  private pasting = false;
  /** After Ctrl-V: the next key is taken literally (by readline and by a terminal in cooked mode). */
  private literalNext = false;
  /**
   * Text typed before a Ctrl-C that the shell may still hold: one that ignores SIGINT (`trap '' INT`)
   * keeps its line, so the line at Enter is judged with it as well as without it.
   */
  private kept: string | null = null;

  /** `decide` returns null when no rule on commands could apply to the line. */
  constructor(decide: (line: SubmittedLine) => Verdict | null) {
    this.decide = decide;
  }

  /**
   * Reads a chunk of input from `from`; returns the first Enter whose line is refused or held (the
   * state is then as after that Enter), or null when all of the chunk may go through.
   */
  scan(chunk: Buffer, from = 0): LineStop | null {
    let textStart = -1;
    const flushText = (end: number) => {
      if (textStart < 0) return;
      this.append(this.decoder.write(chunk.subarray(textStart, end)));
      textStart = -1;
    };
    for (let i = from; i < chunk.length; i++) {
      const b = chunk[i]!;
      const literal = this.literalNext;
      this.literalNext = false;
      if (this.escape !== 0) {
        if (b >= 0x20) {
          this.escapeByte(b);
          continue;
        }
        // A control key inside an escape sequence is a key of its own (a terminal in cooked mode
        // knows no escape sequences; readline drops an unbound prefix and reads the key): ESC CR is
        // an Enter.
        this.escape = 0;
        this.unreadable ??= 'it was edited with an Alt/Meta key';
      }
      if (b >= 0x20 && b !== DEL) {
        if (textStart < 0) textStart = i;
        continue;
      }
      flushText(i);
      if (b === CR || b === LF) {
        // Inside a bracketed paste a newline is part of the line (the shell runs it all at Enter);
        // otherwise it is Enter, and CR LF from a client is one Enter.
        if (this.pasting) {
          this.append('\n');
          // A program that does not know bracketed paste runs each pasted line at its newline (and
          // the markers can be sent without a paste): what it could run so far is decided now.
          const stop = this.decideOpenLine(i);
          if (stop) return stop;
          continue;
        }
        if (b === LF && i > from && chunk[i - 1] === CR) continue;
        const stop = this.submit(i);
        if (stop) return stop;
        continue;
      }
      // readline inserts a bracketed paste as it comes, editing keys included; a terminal in cooked
      // mode edits with them: which one the line got is not known.
      if (this.pasting && (b === DEL || b === BACKSPACE || b === CTRL_U || b === CTRL_W)) {
        this.unreadable ??= 'an editing key was pasted (a shell may take it as text)';
        continue;
      }
      switch (b) {
        case DEL: case BACKSPACE: this.edit((t) => [...t].slice(0, -1).join('')); break;
        // Ctrl-C drops the whole line; Ctrl-U only what is left of the cursor, which is the whole
        // line unless the cursor may have moved (the line is then unreadable, and stays so).
        // Ctrl-V Ctrl-C is a literal ^C in the line, not an interrupt.
        case CTRL_C: if (literal) this.unreadable ??= 'it was edited with the control key Ctrl-V'; else {
            if (this.unreadable === null && this.line !== '') this.kept = (this.kept ?? '') + this.line;
            this.reset();
          }
          break;
        case CTRL_U: if (this.unreadable === null) { this.reset(); this.kept = null; } break;
        case CTRL_W: this.edit((t) => t.replace(/\S+\s*$/, '')); break;
        case FORM_FEED: break;
        case ESC: this.escape = 1; break;
        case TAB:
          if (this.pasting) this.append('\t');
          else this.unreadable ??= 'completion (Tab) changed it';
          break;
        default: {
          // A key the gate cannot follow may run the line without an Enter (Ctrl-D hands it to the
          // program in a terminal's cooked mode, and a second one is end of input; Ctrl-O is
          // readline's operate-and-get-next): the line so far is decided before the key goes.
          const stop = this.decideOpenLine(i);
          if (stop) return stop;
          // Ctrl-D leaves the line as it was (readline: delete under the cursor, at its end; cooked mode: the line goes on).
          if (b !== CTRL_D) this.unreadable ??= `it was edited with the control key Ctrl-${String.fromCharCode(b + 0x40)}`;
          if (b === CTRL_V) this.literalNext = true;
          break;
        }
      }
    }
    flushText(chunk.length);
    return null;
  }

  private submit(at: number): LineStop | null {
    const { line, verdict } = this.judge(this.unreadable !== null ? { text: null, why: this.unreadable } : { text: this.line });
    this.reset();
    this.kept = null;
    if (verdict && (verdict.decision === 'deny' || verdict.decision === 'hold')) return { at, line, verdict };
    return null;
  }

  /** The line's verdict, and that of the text kept from before a Ctrl-C with it: the more restrictive. */
  private judge(line: SubmittedLine): { line: SubmittedLine; verdict: Verdict | null } {
    const verdict = this.decide(line);
    if (this.kept === null || line.text === null || !verdict) return { line, verdict };
    const withKept: SubmittedLine = { text: this.kept + line.text };
    const other = this.decide(withKept);
    if (!other || RANK[other.decision] <= RANK[verdict.decision]) return { line, verdict };
    return { line: withKept, verdict: { ...other, reason: `${other.reason} (with the text typed before Ctrl-C, which a shell that ignores SIGINT keeps)` } };
  }

  /** Backspace, Ctrl-W: they may reach into text kept from before a Ctrl-C. */
  private edit(f: (text: string) => string): void {
    if (this.kept === null) {
      this.line = f(this.line);
      return;
    }
    const full = f(this.kept + this.line);
    if (full.length >= this.kept.length && full.startsWith(this.kept)) this.line = full.slice(this.kept.length);
    else {
      this.kept = full === '' ? null : full;
      this.line = '';
    }
  }

  /** Inside a paste: decides the text so far (a superset of the line such a program would run); refused, the line is dropped. */
  private decideOpenLine(at: number): LineStop | null {
    const { line, verdict } = this.judge(this.unreadable !== null ? { text: null, why: this.unreadable } : { text: this.line });
    if (!verdict || (verdict.decision !== 'deny' && verdict.decision !== 'hold')) return null;
    this.line = '';
    this.unreadable = null;
    this.kept = null;
    return { at, line, verdict };
  }

  private append(text: string): void {
    if (this.unreadable !== null) return;
    this.line += text;
    if (this.line.length > MAX_LINE) this.unreadable = `it is longer than ${MAX_LINE} characters`;
  }

  private reset(): void {
    this.line = '';
    this.unreadable = null;
    this.decoder = new StringDecoder('utf8');
  }

  /** Escape sequences: bracketed-paste markers are followed; anything else moves the cursor or recalls history. */
  private escapeByte(b: number): void {
    if (this.escape === 1) {
      if (b === 0x5b) { this.escape = 2; this.csi = ''; return; }
      if (b === 0x4f) { this.escape = 3; return; }
      this.escape = 0;
      this.unreadable ??= 'it was edited with an Alt/Meta key';
      return;
    }
    if (this.escape === 3) {
      this.escape = 0;
      this.unreadable ??= 'it was edited with cursor or function keys';
      return;
    }
    if (b >= 0x40 && b <= 0x7e) {
      this.escape = 0;
      const seq = this.csi + String.fromCharCode(b);
      if (seq === '200~') { this.pasting = true; return; }
      if (seq === '201~') { this.pasting = false; return; }
      this.unreadable ??= 'it was edited with cursor, history or function keys';
      return;
    }
    if (this.csi.length < 32) this.csi += String.fromCharCode(b);
  }
}

/** What the shell gets instead of a refused line's Enter: Ctrl-E, Ctrl-U. */
export const CANCEL_LINE = Buffer.from([0x05, CTRL_U]);
