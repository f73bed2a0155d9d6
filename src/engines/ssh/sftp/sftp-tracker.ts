// Watches both directions of an SFTP channel and records each file operation: transfers with
// path, direction, size and SHA-256 of the content, and changes (remove, rename, mkdir, …) with
// their outcome. Requests that change the target are recorded before they are forwarded.
// Bytes are never altered; a malformed stream is passed on and noted once.
import { createHash, type Hash } from 'node:crypto';
import type { SessionRecording } from '../../../recorder/recorder.ts';
import { SftpFramer, SftpReader } from './sftp-framer.ts';

const T = {
  INIT: 1, VERSION: 2, OPEN: 3, CLOSE: 4, READ: 5, WRITE: 6, LSTAT: 7, FSTAT: 8, SETSTAT: 9, FSETSTAT: 10, OPENDIR: 11, READDIR: 12,
  REMOVE: 13, MKDIR: 14, RMDIR: 15, REALPATH: 16, STAT: 17, RENAME: 18, READLINK: 19, SYMLINK: 20,
  STATUS: 101, HANDLE: 102, DATA: 103, NAME: 104, ATTRS: 105, EXTENDED: 200, EXTENDED_REPLY: 201,
} as const;
const FXF_WRITE = 0x02;
const STATUS_TEXT = ['ok', 'eof', 'no such file', 'permission denied', 'failure', 'bad message', 'no connection', 'connection lost', 'unsupported'];
/** Out-of-order read replies kept per file while waiting for the gap before them. */
const MAX_REORDER_BYTES = 8 * 1024 * 1024;

interface OpenFile {
  path: string;
  write: boolean;
  hash: Hash;
  /** Next offset the hash expects; bytes elsewhere make the hash partial. */
  next: number;
  size: number;
  /** Offset of the first read or write (above 0: a resumed transfer, reget / reput). */
  start: number | null;
  /** Bytes actually read or written: what crossed the gateway, not the file's size. */
  transferred: number;
  sequential: boolean;
  early: Map<number, Buffer>;
  earlyBytes: number;
}

type Pending =
  | { kind: 'open'; path: string; write: boolean }
  | { kind: 'opendir'; path: string }
  | { kind: 'read'; handle: string; offset: number }
  | { kind: 'close'; handle: string }
  | { kind: 'change'; op: string; path: string; to?: string };

export class SftpTracker {
  private readonly rec: SessionRecording;
  private readonly channel: number;
  private readonly pending = new Map<number, Pending>();
  private readonly files = new Map<string, OpenFile>();
  private readonly toClient: SftpFramer;
  private readonly toServer: SftpFramer;
  /** Records that must be durable before the chunk now being inspected is forwarded. */
  private gate: Array<Promise<void>> = [];
  private broken = false;

  constructor(rec: SessionRecording, channel: number) {
    this.rec = rec;
    this.channel = channel;
    this.toServer = new SftpFramer((p) => this.request(p));
    this.toClient = new SftpFramer((p) => this.reply(p));
  }

  fromClient(chunk: Buffer): Promise<void> | undefined {
    this.observe(this.toServer, chunk);
    if (this.gate.length === 0) return undefined;
    const wait = this.gate.length === 1 ? this.gate[0]! : Promise.all(this.gate).then(() => {});
    this.gate = [];
    return wait;
  }

  fromServer(chunk: Buffer): void {
    this.observe(this.toClient, chunk);
  }

  /** The channel ended: files still open are recorded as they stood. */
  close(): void {
    for (const [handle, f] of this.files) this.finishFile(handle, f, 'channel closed before the file was closed');
    this.files.clear();
  }

  private observe(framer: SftpFramer, chunk: Buffer): void {
    if (this.broken) return;
    try {
      framer.push(chunk);
    } catch (err) {
      this.broken = true;
      this.rec.append('sftp.unparsed', { ch: this.channel, message: (err as Error).message });
    }
  }

  private record(type: string, data: Record<string, unknown>): void {
    const durable = this.rec.beforeForward(type, { ch: this.channel, via: 'sftp', ...data });
    if (durable) this.gate.push(durable);
  }

  private request(p: Buffer): void {
    const r = new SftpReader(p);
    const type = r.byte();
    if (type === T.INIT) return;
    const id = r.uint32();
    switch (type) {
      case T.OPEN: {
        const path = r.string();
        const write = (r.uint32() & FXF_WRITE) !== 0;
        this.pending.set(id, { kind: 'open', path, write });
        if (write) this.record('file.open', { path, mode: 'write' });
        return;
      }
      case T.OPENDIR: this.pending.set(id, { kind: 'opendir', path: r.string() }); return;
      case T.READ: {
        const handle = r.bytes().toString('latin1');
        const offset = r.uint64();
        const f = this.files.get(handle);
        if (f) this.started(f, offset);
        this.pending.set(id, { kind: 'read', handle, offset });
        return;
      }
      case T.WRITE: {
        const f = this.files.get(r.bytes().toString('latin1'));
        const offset = r.uint64();
        if (f) {
          this.started(f, offset);
          this.hashAt(f, offset, r.bytes());
        }
        return;
      }
      case T.CLOSE: this.pending.set(id, { kind: 'close', handle: r.bytes().toString('latin1') }); return;
      case T.REMOVE: return this.change(id, 'remove', r.string());
      case T.MKDIR: return this.change(id, 'mkdir', r.string());
      case T.RMDIR: return this.change(id, 'rmdir', r.string());
      case T.SETSTAT: return this.change(id, 'setstat', r.string());
      case T.RENAME: return this.change(id, 'rename', r.string(), r.string());
      // OpenSSH's sftp sends SYMLINK with its arguments swapped (target first): recorded as sent.
      case T.SYMLINK: return this.change(id, 'symlink', r.string(), r.string());
      case T.EXTENDED: {
        const name = r.string();
        if (name === 'posix-rename@openssh.com') return this.change(id, 'rename', r.string(), r.string());
        if (name === 'hardlink@openssh.com') return this.change(id, 'hardlink', r.string(), r.string());
        if (name === 'lsetstat@openssh.com') return this.change(id, 'setstat', r.string());
        if (name === 'copy-data') return this.change(id, 'copy-data', '(open handles)');
        return;
      }
      default: return;
    }
  }

  private change(id: number, op: string, path: string, to?: string): void {
    this.pending.set(id, { kind: 'change', op, path, ...(to !== undefined ? { to } : {}) });
    this.record('file.request', { op, path, ...(to !== undefined ? { to } : {}) });
  }

  private reply(p: Buffer): void {
    const r = new SftpReader(p);
    const type = r.byte();
    if (type === T.VERSION) return;
    const id = r.uint32();
    const req = this.pending.get(id);
    if (!req) return;
    this.pending.delete(id);
    const status = type === T.STATUS ? r.uint32() : -1;
    const message = type === T.STATUS ? safeString(r) : '';
    switch (req.kind) {
      case 'open':
        if (type === T.HANDLE) {
          this.files.set(r.bytes().toString('latin1'), {
            path: req.path, write: req.write, hash: createHash('sha256'), next: 0, size: 0, start: null, transferred: 0, sequential: true, early: new Map(), earlyBytes: 0,
          });
        } else {
          this.rec.append('file.op', { ch: this.channel, via: 'sftp', op: req.write ? 'upload' : 'download', path: req.path, status: statusText(status, message) });
        }
        return;
      case 'opendir':
        this.rec.append('file.op', { ch: this.channel, via: 'sftp', op: 'list', path: req.path, status: type === T.HANDLE ? 'ok' : statusText(status, message) });
        return;
      case 'read': {
        const f = this.files.get(req.handle);
        if (f && type === T.DATA) this.hashAt(f, req.offset, r.bytes());
        return;
      }
      case 'close': {
        const f = this.files.get(req.handle);
        if (!f) return;
        this.files.delete(req.handle);
        this.finishFile(req.handle, f, status === 0 ? null : statusText(status, message));
        return;
      }
      case 'change':
        this.rec.append('file.op', { ch: this.channel, via: 'sftp', op: req.op, path: req.path, ...(req.to !== undefined ? { to: req.to } : {}), status: statusText(status, message) });
        return;
    }
  }

  /** The first read or write of a file says where the transfer starts: past 0 it resumes one, and hashes only part. */
  private started(f: OpenFile, offset: number): void {
    if (f.start !== null) return;
    f.start = offset;
    if (offset > 0) f.sequential = false;
  }

  /** Hashes data placed at `offset`, holding early arrivals until the gap before them fills. */
  private hashAt(f: OpenFile, offset: number, data: Buffer): void {
    f.size = Math.max(f.size, offset + data.length);
    f.transferred += data.length;
    if (!f.sequential) return;
    if (offset === f.next) {
      f.hash.update(data);
      f.next += data.length;
      let more: Buffer | undefined;
      while ((more = f.early.get(f.next)) !== undefined) {
        f.early.delete(f.next);
        f.earlyBytes -= more.length;
        f.hash.update(more);
        f.next += more.length;
      }
    } else if (offset > f.next && f.earlyBytes + data.length <= MAX_REORDER_BYTES) {
      f.early.set(offset, Buffer.from(data));
      f.earlyBytes += data.length;
    } else {
      f.sequential = false;
      f.early.clear();
    }
  }

  private finishFile(_handle: string, f: OpenFile, problem: string | null): void {
    const complete = f.sequential && f.early.size === 0 && f.next === f.size;
    // size is what was transferred: a resumed transfer (reget, reput) moves only the rest of the file.
    this.rec.append('file.op', {
      ch: this.channel, via: 'sftp', op: f.write ? 'upload' : 'download', path: f.path, size: f.transferred,
      ...(f.start !== null && f.start > 0 ? { resumedFrom: f.start, endOffset: f.size } : {}),
      ...(complete ? { sha256: f.hash.digest('hex') }
        : { sha256: null, hashNote: f.start !== null && f.start > 0 ? `resumed at byte ${f.start}: only the rest of the file crossed the gateway, so no content hash of the file`
          : 'the transfer was not one contiguous stream (partial or out of order), so no content hash' }),
      status: problem ?? 'ok',
    });
  }
}

function statusText(code: number, message: string): string {
  if (code === 0) return 'ok';
  const name = STATUS_TEXT[code] ?? `status ${code}`;
  return message && message.toLowerCase() !== name ? `${name}: ${message}` : name;
}

function safeString(r: SftpReader): string {
  try {
    return r.string();
  } catch {
    return '';
  }
}
