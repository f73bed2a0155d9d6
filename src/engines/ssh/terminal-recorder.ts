// Records one channel's terminal stream (shell, or a command run with a pty) as timed events:
// input, output and resizes — the material an asciicast replay is made of. Output is recorded as
// it passes. Input is what the person or agent typed, and on a durable connection its record
// comes first where it matters: a chunk holding Enter, a control key (Ctrl-C, Ctrl-D, …) or an
// escape sequence is held until it and everything typed before it are committed. Printable
// keystrokes only edit the line being typed, so they are forwarded at once (echo stays fast) and
// committed with the next batch, within milliseconds and always before the Enter that submits them.
import { StringDecoder } from 'node:string_decoder';
import type { SessionRecording } from '../../recorder/recorder.ts';

export class TerminalRecorder {
  private readonly rec: SessionRecording;
  private readonly channel: number;
  // Separate decoders: a multi-byte character may be split across chunks in either direction.
  private readonly inDecoder = new StringDecoder('utf8');
  private readonly outDecoder = new StringDecoder('utf8');
  private readonly errDecoder = new StringDecoder('utf8');

  constructor(rec: SessionRecording, channel: number) {
    this.rec = rec;
    this.channel = channel;
  }

  input(chunk: Buffer): Promise<void> | undefined {
    const d = this.inDecoder.write(chunk);
    if (!d) return undefined;
    if (!submits(chunk)) {
      this.rec.append('term.in', { ch: this.channel, d });
      return undefined;
    }
    return this.rec.beforeForward('term.in', { ch: this.channel, d });
  }

  output(chunk: Buffer): void {
    const d = this.outDecoder.write(chunk);
    if (d) this.rec.append('term.out', { ch: this.channel, d });
  }

  /** stderr shares the terminal in a replay, as it does on screen. */
  stderr(chunk: Buffer): void {
    const d = this.errDecoder.write(chunk);
    if (d) this.rec.append('term.out', { ch: this.channel, d, stream: 'stderr' });
  }

  resize(cols: number, rows: number): void {
    this.rec.append('term.resize', { ch: this.channel, cols, rows });
  }
}

/** Whether input can make the other side act: any control byte (Enter, Ctrl-keys, ESC sequences, DEL). */
function submits(chunk: Buffer): boolean {
  for (let i = 0; i < chunk.length; i++) {
    const b = chunk[i]!;
    if (b < 0x20 || b === 0x7f) return true;
  }
  return false;
}
