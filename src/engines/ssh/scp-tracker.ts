// Records files moved with the legacy scp protocol (`scp -O`, or old clients): `scp -t PATH`
// receives files on the target (upload), `scp -f PATH` sends them (download). The sending side
// announces each file with a `C<mode> <size> <name>` line followed by its bytes; `D`/`E` lines
// enter and leave directories. Modern scp uses SFTP instead (see sftp/).
import { createHash, type Hash } from 'node:crypto';
import path from 'node:path';
import type { SessionRecording } from '../../recorder/recorder.ts';

export interface ScpCommand { direction: 'upload' | 'download'; target: string; recursive: boolean }

/** Recognises `scp [-options] -t|-f PATH` as sent by scp clients. */
export function parseScpCommand(command: string): ScpCommand | null {
  const m = /^\s*scp((?:\s+-[a-zA-Z]+)*)\s+(?:--\s+)?(.+?)\s*$/.exec(command);
  if (!m) return null;
  const flags = m[1]!.replace(/[\s-]/g, '');
  if (!flags.includes('t') && !flags.includes('f')) return null;
  return { direction: flags.includes('t') ? 'upload' : 'download', target: unquote(m[2]!), recursive: flags.includes('r') };
}

function unquote(s: string): string {
  if (s.length >= 2 && s.startsWith("'") && s.endsWith("'")) return s.slice(1, -1).replaceAll("'\\''", "'");
  return s.replace(/\\(.)/g, '$1');
}

const MAX_LINE = 4096;

export class ScpTracker {
  private readonly rec: SessionRecording;
  private readonly channel: number;
  private readonly cmd: ScpCommand;
  private readonly dirs: string[] = [];
  private line: Buffer[] = [];
  private lineBytes = 0;
  private file: { name: string; size: number; remaining: number; hash: Hash } | null = null;
  private broken = false;
  /** Whether the upload target is a directory on the target host (null: unknown). */
  private targetIsDirectory: boolean | null = null;
  private readonly directoryAnswer: Promise<unknown>;
  /** File records in order; each may wait for the directory answer. */
  private emitted: Promise<void> = Promise.resolve();

  /** `targetIsDirectory` answers, for uploads, where a file named in a `C` line lands. */
  constructor(rec: SessionRecording, channel: number, cmd: ScpCommand, targetIsDirectory?: Promise<boolean | null>) {
    this.rec = rec;
    this.channel = channel;
    this.cmd = cmd;
    this.directoryAnswer = targetIsDirectory?.then((d) => { this.targetIsDirectory = d; }) ?? Promise.resolve();
  }

  /** Bytes from the client: the file stream when uploading (acknowledgements otherwise). */
  fromClient(chunk: Buffer): void {
    if (this.cmd.direction === 'upload') this.source(chunk);
  }

  fromServer(chunk: Buffer): void {
    if (this.cmd.direction === 'download') this.source(chunk);
  }

  /** Settles once every file seen is on record. */
  close(): Promise<void> {
    if (this.file) this.emit('incomplete: the channel closed mid-file');
    return this.emitted;
  }

  /** Parses the sending side's stream. */
  private source(chunk: Buffer): void {
    let off = 0;
    while (off < chunk.length && !this.broken) {
      if (this.file && this.file.remaining > 0) {
        const take = Math.min(this.file.remaining, chunk.length - off);
        this.file.hash.update(chunk.subarray(off, off + take));
        this.file.remaining -= take;
        off += take;
        continue;
      }
      if (this.file) {
        // The byte after the content is the sender's status (0 = ok).
        this.emit(chunk[off] === 0 ? 'ok' : 'error reported by the sender');
        off++;
        continue;
      }
      const nl = chunk.indexOf(0x0a, off);
      const end = nl === -1 ? chunk.length : nl;
      this.line.push(chunk.subarray(off, end));
      this.lineBytes += end - off;
      if (this.lineBytes > MAX_LINE) {
        this.broken = true;
        this.rec.append('scp.unparsed', { ch: this.channel, message: 'control line too long' });
        return;
      }
      off = end;
      if (nl === -1) return;
      off++;
      const text = Buffer.concat(this.line, this.lineBytes).toString('utf8');
      this.line = [];
      this.lineBytes = 0;
      this.control(text);
    }
  }

  private control(text: string): void {
    // A leading NUL is an acknowledgement that shares the direction with control lines.
    const line = text.replace(/^\0+/, '');
    const kind = line[0];
    if (kind === 'C' || kind === 'D') {
      const m = /^[CD][0-7]{4} (\d+) (.+)$/.exec(line);
      if (!m) return;
      const name = m[2]!;
      if (kind === 'D') {
        this.dirs.push(name);
        return;
      }
      this.file = { name, size: Number(m[1]), remaining: Number(m[1]), hash: createHash('sha256') };
    } else if (kind === 'E') {
      this.dirs.pop();
    }
  }

  /** Where the named file lands (upload) or comes from (download), as scp resolves it. */
  private pathOf(name: string, dirs: string[]): string {
    const base = this.cmd.target;
    if (this.cmd.direction === 'download') return dirs.length ? path.posix.join(base, ...dirs.slice(1), name) : base;
    if (dirs.length === 0 && !this.cmd.recursive) return base.endsWith('/') || this.targetIsDirectory ? path.posix.join(base, name) : base;
    return path.posix.join(base, ...dirs, name);
  }

  private emit(status: string): void {
    const f = this.file!;
    this.file = null;
    const dirs = [...this.dirs];
    const sha256 = f.remaining === 0 ? f.hash.digest('hex') : null;
    // The path may depend on whether the upload target is a directory: wait for that answer.
    this.emitted = this.emitted.then(() => this.directoryAnswer).then(() => {
      const unresolved = this.cmd.direction === 'upload' && dirs.length === 0 && !this.cmd.recursive && this.targetIsDirectory === null && !this.cmd.target.endsWith('/');
      this.rec.append('file.op', {
        ch: this.channel, via: 'scp', op: this.cmd.direction, path: this.pathOf(f.name, dirs), size: f.size - f.remaining, sha256, status,
        ...(unresolved ? { pathNote: `stored at ${this.cmd.target}, or inside it if it is a directory` } : {}),
      });
    });
  }
}
