// Records one channel's terminal stream (shell, or a command run with a pty) as timed events:
// input, output and resizes — the material an asciicast replay is made of. Output is recorded as
// it passes. Input is what the person or agent typed, and on a durable connection every chunk of
// it is held until its record is committed: a keystroke can act on its own (vim's `dd` and `ZZ`
// in raw mode, a single key answering a prompt), so none reaches the target before it is on
// record. Group commit keeps this to one commit per burst of typing.
//
// Secrets (issue 15): output passes a StreamMasker before it is recorded, so a secret split across
// the program's writes is masked whole; the masker holds back a bounded tail (the last token, at
// most 16 KiB) until more output comes, HOLD_MS pass, or the channel ends. Input typed after a
// prompt that asks for a password, passphrase, PIN or token (sudo, ssh-keygen, psql, read -s …)
// is recorded as "[hidden input: N bytes]" up to the Enter that ends it: the prompt is how the
// recorder tells that the target's terminal has echo off, as input must be recorded before it is
// forwarded, so before any echo could show otherwise.
import { isUtf8 } from 'node:buffer';
import { StringDecoder } from 'node:string_decoder';
import type { SessionRecording } from '../../recorder/recorder.ts';
import { EdgeMasker, StreamMasker } from '../../masking/detectors.ts';
import { RECORD_DETECTORS, type MaskedNote } from '../../masking/event-masking.ts';

/** Longest time output is held back while its last token may be the start of a secret. */
const HOLD_MS = 500;
/** The end of the output that makes the next typed line hidden input. */
const SECRET_PROMPT = /(?:password|passphrase|passcode|\bpin\b|token|secret|verification code|one-time code|otp)[^\n]{0,80}?[:?]\s{0,4}$/i;

export class TerminalRecorder {
  private readonly rec: SessionRecording;
  private readonly channel: number;
  // Separate decoders: a multi-byte character may be split across chunks.
  private readonly outDecoder = new StringDecoder('utf8');
  private readonly errDecoder = new StringDecoder('utf8');
  private readonly inMasker = new EdgeMasker({ detectors: RECORD_DETECTORS });
  private readonly out = new OutputMasker();
  private readonly err = new OutputMasker();
  private timer: NodeJS.Timeout | null = null;
  /** The end of the output as it came (in memory only): a password prompt there hides the next line typed. */
  private lastOutput = '';
  /** Typing a line after a password prompt: recorded as its length only, until Enter. */
  private hidden = false;

  constructor(rec: SessionRecording, channel: number) {
    this.rec = rec;
    this.channel = channel;
  }

  /** Whether input typed now is hidden input (the line being typed follows a password prompt). */
  get hidingInput(): boolean {
    return this.hidden || SECRET_PROMPT.test(this.lastOutput);
  }

  input(chunk: Buffer): Promise<void> | undefined {
    if (!this.hidden && SECRET_PROMPT.test(this.lastOutput)) this.hidden = true;
    if (this.hidden) {
      this.lastOutput = '';
      let enter = -1;
      for (let i = 0; i < chunk.length; i++) if (chunk[i] === 0x0d || chunk[i] === 0x0a || chunk[i] === 0x03 || chunk[i] === 0x04) { enter = i; break; }
      const secret = enter < 0 ? chunk.length : enter;
      if (enter >= 0) this.hidden = false;
      const rest = chunk.subarray(secret);
      const d = `${secret > 0 ? `[hidden input: ${secret} bytes]` : ''}${rest.toString('utf8')}`;
      return this.rec.beforeForward('term.in', { ch: this.channel, d, ...(secret > 0 ? { hidden: secret } : {}) });
    }
    // Each chunk is recorded whole, before it is forwarded: text when it is valid UTF-8, else also
    // its exact bytes (a character split across chunks, or binary input). A secret cut by the
    // chunk's edges (typed key by key, pasted in pieces) is masked by the EdgeMasker.
    return this.rec.beforeForward('term.in', maskedInput(this.inMasker, this.channel, chunk));
  }

  output(chunk: Buffer): void {
    const d = this.outDecoder.write(chunk);
    if (!d) return;
    this.remember(d);
    this.emit(this.out.feed(d), undefined);
    this.schedule();
  }

  /** stderr shares the terminal in a replay, as it does on screen. */
  stderr(chunk: Buffer): void {
    const d = this.errDecoder.write(chunk);
    if (!d) return;
    this.remember(d);
    this.emit(this.err.feed(d), 'stderr');
    this.schedule();
  }

  resize(cols: number, rows: number): void {
    this.rec.append('term.resize', { ch: this.channel, cols, rows });
  }

  /** Records the output held back (the channel ends, or it paused for HOLD_MS). */
  flush(): void {
    if (this.timer) { clearTimeout(this.timer); this.timer = null; }
    this.emit(this.out.flush(), undefined);
    this.emit(this.err.flush(), 'stderr');
  }

  private remember(d: string): void {
    this.lastOutput = (this.lastOutput + d).slice(-200);
  }

  private schedule(): void {
    if (this.out.pending === 0 && this.err.pending === 0) {
      if (this.timer) { clearTimeout(this.timer); this.timer = null; }
      return;
    }
    if (this.timer || this.rec.isEnded) return;
    this.timer = setTimeout(() => { this.timer = null; if (!this.rec.isEnded) this.flush(); }, HOLD_MS);
    this.timer.unref();
  }

  private emit(part: { d: string; masked: MaskedNote[] }, stream: 'stderr' | undefined): void {
    if (!part.d) return;
    this.rec.append('term.out', { ch: this.channel, d: part.d, ...(stream ? { stream } : {}), ...(part.masked.length ? { masked: part.masked } : {}) });
  }
}

/** A StreamMasker over one output stream, with a note of what each emitted piece had masked. */
class OutputMasker {
  private readonly found = new Map<string, number>();
  private readonly masker = new StreamMasker({ detectors: RECORD_DETECTORS, onFinding: (detector) => this.found.set(detector, (this.found.get(detector) ?? 0) + 1) });

  get pending(): number { return this.masker.pending; }

  feed(d: string): { d: string; masked: MaskedNote[] } { return this.take(this.masker.feed(d)); }

  flush(): { d: string; masked: MaskedNote[] } { return this.take(this.masker.flush()); }

  private take(d: string): { d: string; masked: MaskedNote[] } {
    const masked = [...this.found].map(([detector, count]) => ({ field: 'd', detector, count }));
    this.found.clear();
    return { d, masked };
  }
}

/** An input chunk's event (term.in, ssh.stdin): masked at its edges, text, and its bytes when not UTF-8. */
export function maskedInput(masker: EdgeMasker, channel: number, chunk: Buffer): Record<string, unknown> {
  const { bytes, found } = masker.maskBytes(chunk);
  const d = bytes.toString('utf8');
  return {
    ch: channel, d, ...(isUtf8(bytes) ? {} : { b64: bytes.toString('base64') }),
    ...(found.size > 0 ? { masked: [...found].map(([detector, count]) => ({ field: 'd', detector, count })) } : {}),
  };
}
