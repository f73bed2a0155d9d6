// Records files moved with the legacy scp protocol (`scp -O`, or old clients): `scp -t PATH`
// receives files on the target (upload), `scp -f PATH` sends them (download). The sending side
// announces each file with a `C<mode> <size> <name>` line followed by its bytes; `D`/`E` lines
// enter and leave directories. Modern scp uses SFTP instead (see sftp/).
//
// With a policy, each file and directory an upload announces is asked about before its `C`/`D`
// line is forwarded: a refused one never reaches the target (its line is taken out of the stream;
// an incomplete line is kept back until it is whole) and the client gets scp's own error reply
// (`\x01` and a message line), on which it skips that file and goes on with the next.
import { createHash, type Hash } from 'node:crypto';
import { ContentScan } from '../../masking/content-scan.ts';
import path from 'node:path';
import type { SessionRecording } from '../../recorder/recorder.ts';
import type { Verdict } from '../../policy/types.ts';
import { ChannelAbortError } from './channel-relay.ts';
import { absolutePath, policyField, refuses, type FilePolicy } from './policy-verdict.ts';

/**
 * How the tracker asks the policy about an upload's files and answers the client itself (scp's
 * replies travel target → client; the target is idle while a line waits for its reply).
 */
export type ScpPolicy = FilePolicy;

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
const NEWLINE = Buffer.from('\n');

export class ScpTracker {
  private readonly rec: SessionRecording;
  private readonly channel: number;
  private readonly cmd: ScpCommand;
  private readonly dirs: string[] = [];
  private line: Buffer[] = [];
  private lineBytes = 0;
  private file: { name: string; size: number; remaining: number; hash: Hash; scan: ContentScan; verdict: Verdict | null } | null = null;
  private broken = false;
  /** Whether the upload target is a directory on the target host (null: unknown). */
  private targetIsDirectory: boolean | null = null;
  private readonly directoryAnswer: Promise<unknown>;
  /** File records in order; each may wait for the directory answer. */
  private emitted: Promise<void> = Promise.resolve();

  private readonly policy: ScpPolicy | null;
  /** Upload chunks wait here (in order) until the directory answer is in: a file's path, so its verdict, depends on it. */
  private queue: Promise<unknown> | null = null;
  private queued = 0;

  /** The login directory on the target, which a relative destination is resolved against (null: unknown). */
  private home: string | null = null;

  /**
   * `targetIsDirectory` answers, for uploads, where a file named in a `C` line lands; `home`, for
   * a relative destination, where that is on the target (the policy judges absolute paths).
   */
  constructor(rec: SessionRecording, channel: number, cmd: ScpCommand, targetIsDirectory?: Promise<boolean | null>, policy: ScpPolicy | null = null, home?: Promise<string | null>) {
    this.rec = rec;
    this.channel = channel;
    this.cmd = cmd;
    this.policy = policy;
    this.directoryAnswer = targetIsDirectory?.then((d) => { this.targetIsDirectory = d; }) ?? Promise.resolve();
    const homeAnswer = home?.then((h) => { this.home = h; });
    if (targetIsDirectory || homeAnswer) this.queue = Promise.all([this.directoryAnswer, homeAnswer]);
  }

  /**
   * Bytes from the client: the file stream when uploading (acknowledgements otherwise). For an
   * upload, what may be forwarded (a refused file's line taken out, an incomplete line kept back).
   */
  fromClient(chunk: Buffer): Buffer | Promise<Buffer> | undefined {
    if (this.cmd.direction !== 'upload') return undefined;
    if (!this.queue) return this.filterUpload(chunk);
    this.queued++;
    const kept = this.queue.then(() => this.filterUpload(chunk)).finally(() => { if (--this.queued === 0) this.queue = null; });
    this.queue = kept;
    return kept;
  }

  /** The upload stream with refused files' lines taken out; content and other lines pass as they are. */
  private filterUpload(chunk: Buffer): Buffer {
    const out: Buffer[] = [];
    let off = 0;
    while (off < chunk.length) {
      if (this.broken) {
        out.push(chunk.subarray(off));
        break;
      }
      if (this.file && this.file.remaining > 0) {
        const take = Math.min(this.file.remaining, chunk.length - off);
        this.file.hash.update(chunk.subarray(off, off + take));
        this.file.scan.add(chunk.subarray(off, off + take));
        this.file.remaining -= take;
        out.push(chunk.subarray(off, off + take));
        off += take;
        continue;
      }
      if (this.file) {
        this.emit(chunk[off] === 0 ? 'ok' : 'error reported by the sender');
        out.push(chunk.subarray(off, off + 1));
        off++;
        continue;
      }
      const nl = chunk.indexOf(0x0a, off);
      const end = nl === -1 ? chunk.length : nl;
      // Copied: a line kept back must outlive the chunk.
      this.line.push(Buffer.from(chunk.subarray(off, end)));
      this.lineBytes += end - off;
      off = end;
      if (this.lineBytes > MAX_LINE) {
        this.broken = true;
        this.rec.append('scp.unparsed', { ch: this.channel, message: 'control line too long' });
        if (this.policy?.decide(['write'], this.cmd.target)) throw new ChannelAbortError('an scp control line is too long to read, so the upload cannot be checked against the policy');
        out.push(Buffer.concat(this.line, this.lineBytes));
        this.line = [];
        this.lineBytes = 0;
        continue;
      }
      if (nl === -1) break;
      off++;
      const raw = Buffer.concat(this.line, this.lineBytes);
      this.line = [];
      this.lineBytes = 0;
      if (this.control(raw.toString('utf8'))) out.push(raw, NEWLINE);
    }
    return out.length === 1 ? out[0]! : Buffer.concat(out);
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
        this.file.scan.add(chunk.subarray(off, off + take));
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

  /** Reads one control line; false when the policy refused it (it is then not forwarded, and the client was told). */
  private control(text: string): boolean {
    // A leading NUL is an acknowledgement that shares the direction with control lines.
    const line = text.replace(/^\0+/, '');
    const kind = line[0];
    if (kind === 'C' || kind === 'D') {
      // The sink's own grammar: four octal digits, a size, any name (even empty: scp then writes
      // to the target path itself; `s`: a name may hold any character but the newline).
      const m = /^[CD][0-7]{4} (\d+) (.*)$/s.exec(line);
      if (!m) return true;
      const name = m[2]!;
      const upload = this.cmd.direction === 'upload';
      const where = kind === 'D' ? path.posix.join(this.cmd.target, ...this.dirs, name) : this.pathOf(name, this.dirs);
      const abs = absolutePath(where, this.home);
      const verdict = !upload || !this.policy ? null
        : abs === null ? this.policy.unreadable(`the destination ${JSON.stringify(where)} is relative and the gateway could not learn the login directory on the target`)
          : this.policy.decide(kind === 'D' ? ['mkdir'] : ['write', 'create', 'truncate'], abs);
      if (verdict && refuses(verdict)) {
        this.rec.append('file.op', { ch: this.channel, via: 'scp', op: kind === 'D' ? 'mkdir' : 'upload', path: where, size: Number(m[1]), status: 'denied by policy', ...policyField(verdict) });
        // scp's error reply: the client prints the line, counts an error and skips this file or directory.
        this.policy!.toClient(Buffer.from(`\x01gatehouse: ${verdict.reason.replace(/[\x00-\x1f\x7f]/g, '?')}\n`, 'utf8'));
        return false;
      }
      if (kind === 'D') {
        this.dirs.push(name);
        return true;
      }
      this.file = { name, size: Number(m[1]), remaining: Number(m[1]), hash: createHash('sha256'), scan: new ContentScan(), verdict };
    } else if (kind === 'E') {
      this.dirs.pop();
    }
    return true;
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
    const scanned = f.scan.finish();
    // The path may depend on whether the upload target is a directory: wait for that answer.
    this.emitted = this.emitted.then(() => this.directoryAnswer).then(() => {
      const unresolved = this.cmd.direction === 'upload' && dirs.length === 0 && !this.cmd.recursive && this.targetIsDirectory === null && !this.cmd.target.endsWith('/');
      this.rec.append('file.op', {
        ch: this.channel, via: 'scp', op: this.cmd.direction, path: this.pathOf(f.name, dirs), size: f.size - f.remaining, sha256, ...scanned, status,
        ...(unresolved ? { pathNote: `stored at ${this.cmd.target}, or inside it if it is a directory` } : {}), ...policyField(f.verdict),
      });
    });
  }
}
