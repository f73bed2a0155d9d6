// Records one channel's terminal stream (shell, or a command run with a pty) as timed events:
// input, output and resizes — the material an asciicast replay is made of. Output is recorded as
// it passes. Input is what the person or agent typed, and on a durable connection every chunk of
// it is held until its record is committed: a keystroke can act on its own (vim's `dd` and `ZZ`
// in raw mode, a single key answering a prompt), so none reaches the target before it is on
// record. Group commit keeps this to one commit per burst of typing.
import { isUtf8 } from 'node:buffer';
import { StringDecoder } from 'node:string_decoder';
import type { SessionRecording } from '../../recorder/recorder.ts';

export class TerminalRecorder {
  private readonly rec: SessionRecording;
  private readonly channel: number;
  // Separate decoders: a multi-byte character may be split across chunks.
  private readonly outDecoder = new StringDecoder('utf8');
  private readonly errDecoder = new StringDecoder('utf8');

  constructor(rec: SessionRecording, channel: number) {
    this.rec = rec;
    this.channel = channel;
  }

  input(chunk: Buffer): Promise<void> | undefined {
    // Each chunk is recorded whole, before it is forwarded: text when it is valid UTF-8, else also
    // its exact bytes (a character split across chunks, or binary input).
    const d = chunk.toString('utf8');
    return this.rec.beforeForward('term.in', isUtf8(chunk) ? { ch: this.channel, d } : { ch: this.channel, d, b64: chunk.toString('base64') });
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
