// Records one channel's terminal stream (shell, or a command run with a pty) as timed events:
// input, output and resizes — the material an asciicast replay is made of. Input is recorded
// before it is forwarded (it is what the person or agent typed); output as it passes.
import { StringDecoder } from 'node:string_decoder';
import type { SessionRecording } from '../../recorder/recorder.ts';

export class TerminalRecorder {
  private readonly rec: SessionRecording;
  private readonly channel: number;
  private readonly durableInput: boolean;
  // Separate decoders: a multi-byte character may be split across chunks in either direction.
  private readonly inDecoder = new StringDecoder('utf8');
  private readonly outDecoder = new StringDecoder('utf8');
  private readonly errDecoder = new StringDecoder('utf8');

  constructor(rec: SessionRecording, channel: number, durableInput: boolean) {
    this.rec = rec;
    this.channel = channel;
    this.durableInput = durableInput;
  }

  input(chunk: Buffer): Promise<void> | undefined {
    const d = this.inDecoder.write(chunk);
    if (!d) return undefined;
    if (!this.durableInput) {
      this.rec.append('term.in', { ch: this.channel, d });
      return undefined;
    }
    return this.rec.record('term.in', { ch: this.channel, d });
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
