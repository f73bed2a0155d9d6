// Watches both directions of an SFTP channel and records each file operation: transfers with
// path, direction, size and SHA-256 of the content, and changes (remove, rename, mkdir, setstat,
// truncating or creating opens, …) with their outcome. Every request that may change the target
// is recorded before it is forwarded. Bytes are never altered. The tracker fails closed: a stream
// it cannot check (a malformed packet, an SFTP version it cannot read, more out-of-order data
// than the channel's reorder budget, more unanswered requests and open handles than it will
// remember) is recorded as `sftp.closed` and the channel is closed, never relayed unchecked.
//
// With a policy (src/policy/), each change is asked about before it is forwarded: a refused
// request is taken out of the stream (only whole packets are forwarded, so none is half-sent) and
// answered by the gateway with SSH_FX_PERMISSION_DENIED and the reason, spliced into the target's
// replies at a packet boundary; the target never sees it.
import type { SessionRecording } from '../../../recorder/recorder.ts';
import type { FileOp, Verdict } from '../../../policy/types.ts';
import { ChannelAbortError } from '../channel-relay.ts';
import { absolutePath, policyField, refuses, type FilePolicy } from '../policy-verdict.ts';
import { framed, SftpFramer, SftpProtocolError, SftpReader } from './sftp-framer.ts';
import { readAttrs } from './sftp-attrs.ts';
import { ContentHash, ReorderBudget, ReorderBudgetExceededError } from './content-hash.ts';
import { classifyExtended } from './sftp-extensions.ts';
import { BoundedMap, StateBudget, TrackingLimitError } from './tracked-state.ts';

const T = {
  INIT: 1, VERSION: 2, OPEN: 3, CLOSE: 4, READ: 5, WRITE: 6, LSTAT: 7, FSTAT: 8, SETSTAT: 9, FSETSTAT: 10, OPENDIR: 11, READDIR: 12,
  REMOVE: 13, MKDIR: 14, RMDIR: 15, REALPATH: 16, STAT: 17, RENAME: 18, READLINK: 19, SYMLINK: 20,
  STATUS: 101, HANDLE: 102, DATA: 103, NAME: 104, ATTRS: 105, EXTENDED: 200, EXTENDED_REPLY: 201,
} as const;
/** Requests that only read: forwarded without a record of their own. */
const READ_ONLY_TYPES = new Set<number>([T.LSTAT, T.FSTAT, T.READDIR, T.REALPATH, T.STAT, T.READLINK]);
const FXF = { READ: 0x01, WRITE: 0x02, APPEND: 0x04, CREAT: 0x08, TRUNC: 0x10, EXCL: 0x20 } as const;
const STATUS_TEXT = ['ok', 'eof', 'no such file', 'permission denied', 'failure', 'bad message', 'no connection', 'connection lost', 'unsupported'];
/**
 * Out-of-order data one channel may hold while waiting for the gap before it, across all its
 * files. OpenSSH's client keeps at most 64 requests of ~255 KiB in flight and its server answers
 * in order, so this is never reached by it.
 */
export const SFTP_REORDER_BUDGET = 16 * 1024 * 1024;
/**
 * Requests awaiting an answer plus open handles one channel may have, and the characters of
 * path they keep. OpenSSH's client keeps at most 64 requests in flight; a target that never
 * answers would otherwise make the gateway remember every request sent to it.
 */
export const SFTP_MAX_TRACKED = 20_000;
export const SFTP_MAX_TRACKED_TEXT = 32 * 1024 * 1024;
/** The SFTP version whose packets the tracker reads (OpenSSH speaks only this one). */
const SFTP_VERSION = 3;
/** Longest extension name kept in a record. */
const MAX_NAME = 256;

/** How the tracker asks the policy about a change and answers the client for it (toClient is called only at an SFTP packet boundary). */
export type SftpPolicy = FilePolicy;

const FX_PERMISSION_DENIED = 3;

/** What an OPEN does to the target, by its flags: only `download` leaves the file as it was. */
type OpenOp = 'upload' | 'truncate' | 'create' | 'download';

interface OpenFile {
  path: string;
  op: OpenOp;
  flags: string[];
  content: ContentHash;
}

type Pending =
  | { kind: 'open'; path: string; op: OpenOp; flags: string[] }
  | { kind: 'opendir'; path: string }
  | { kind: 'read'; handle: string; offset: number }
  | { kind: 'close'; handle: string }
  /** REALPATH of "." (the server's working directory, which relative paths are resolved against). */
  | { kind: 'realpath' }
  | { kind: 'change'; op: string; path: string | null; to?: string; what?: Record<string, unknown> };

export class SftpTracker {
  private readonly rec: SessionRecording;
  private readonly channel: number;
  private readonly state = new StateBudget(SFTP_MAX_TRACKED, SFTP_MAX_TRACKED_TEXT);
  private readonly pending = new BoundedMap<number, Pending>(this.state, (_id, p) => pendingText(p));
  private readonly files = new BoundedMap<string, OpenFile>(this.state, (handle, f) => handle.length + f.path.length);
  /** Open directory handles, for FSETSTAT on one. */
  private readonly dirs = new BoundedMap<string, string>(this.state, (handle, path) => handle.length + path.length);
  private readonly budget: ReorderBudget;
  private readonly toClient: SftpFramer;
  private readonly toServer: SftpFramer;
  /** Records that must be durable before the chunk now being inspected is forwarded. */
  private gate: Array<Promise<void>> = [];
  /** Set once the stream could not be checked: every later chunk is refused with it. */
  private refused: ChannelAbortError | null = null;
  private readonly policy: SftpPolicy | null;
  /** Whole client packets of the chunk being inspected that may go to the target. */
  private forward: Buffer[] = [];
  /** A packet of the chunk being inspected was refused by the policy. */
  private withheld = false;
  /** Denials for the client waiting for the target's stream to reach a packet boundary. */
  private injected: Buffer[] = [];
  /** Set while a target chunk is inspected with denials waiting: told where each reply ends. */
  private replyEnd: ((length: number) => void) | null = null;
  /** The server's working directory, from its answer to REALPATH "." (null: not asked yet). */
  private cwd: string | null = null;

  constructor(rec: SessionRecording, channel: number, budgetBytes = SFTP_REORDER_BUDGET, policy: SftpPolicy | null = null) {
    this.rec = rec;
    this.channel = channel;
    this.budget = new ReorderBudget(budgetBytes);
    this.policy = policy;
    this.toServer = new SftpFramer((p) => {
      if (this.request(p)) this.forward.push(framed(p));
      else this.withheld = true;
    });
    this.toClient = new SftpFramer((p) => {
      this.replyEnd?.(p.length);
      this.reply(p);
    });
  }

  /**
   * Client → target bytes: what may be forwarded (whole packets only; a refused one taken out),
   * as a promise when records must be durable first. Throws ChannelAbortError to close the channel.
   */
  fromClient(chunk: Buffer): Buffer | Promise<Buffer> {
    const startedOnBoundary = this.toServer.buffered === 0;
    this.forward = [];
    this.withheld = false;
    this.observe(this.toServer, chunk, 'client');
    // The common case costs no copy: the chunk was whole packets, all allowed.
    const out = startedOnBoundary && !this.withheld && this.toServer.buffered === 0 ? chunk
      : this.forward.length === 1 ? this.forward[0]! : Buffer.concat(this.forward);
    this.forward = [];
    if (this.gate.length === 0) return out;
    const wait = this.gate.length === 1 ? this.gate[0]! : Promise.all(this.gate);
    this.gate = [];
    return wait.then(() => out);
  }

  /**
   * Target → client bytes; with denials waiting for a packet boundary, the chunk with them
   * spliced in at its first boundary. Throws ChannelAbortError to close the channel.
   */
  fromServer(chunk: Buffer): Buffer | void {
    if (this.injected.length === 0) {
      this.observe(this.toClient, chunk, 'target');
      return;
    }
    let at = -this.toClient.buffered;
    let cut = -1;
    this.replyEnd = (length) => {
      at += length + 4;
      if (cut < 0) cut = at;
    };
    try {
      this.observe(this.toClient, chunk, 'target');
    } finally {
      this.replyEnd = null;
    }
    if (cut < 0) return;
    const out = Buffer.concat([chunk.subarray(0, cut), ...this.injected, chunk.subarray(cut)]);
    this.injected = [];
    return out;
  }

  /**
   * Asks the policy about a change before it is forwarded. Refused: recorded with the verdict,
   * answered with PERMISSION_DENIED, and false (the packet is taken out of the stream). Allowed:
   * the verdict to record with the request (undefined when no rule applied).
   */
  private ask(id: number, op: string, ops: readonly FileOp[], path: string, toPath?: string, shown: Record<string, unknown> = {}): Verdict | false | undefined {
    if (!this.policy) return undefined;
    // The server resolves a relative path against its working directory: so does the policy.
    const abs = absolutePath(path, this.cwd);
    const absTo = toPath !== undefined ? absolutePath(toPath, this.cwd) : undefined;
    const unplaced = abs === null ? path : absTo === null ? toPath : undefined;
    const verdict = unplaced !== undefined
      ? this.policy.unreadable(`the path ${JSON.stringify(unplaced)} is relative and the gateway does not know the directory the server resolves it against (send absolute paths, or REALPATH "." first)`)
      : this.policy.decide(ops, abs!, absTo ?? undefined);
    if (!verdict) return undefined;
    if (!refuses(verdict)) return verdict;
    this.rec.append('file.op', { ch: this.channel, via: 'sftp', op, path, ...(toPath !== undefined ? { to: toPath } : {}), ...shown, status: 'denied by policy', ...policyField(verdict) });
    this.answer(statusPacket(id, FX_PERMISSION_DENIED, `gatehouse: ${verdict.reason}`));
    return false;
  }

  /** A reply from the gateway itself: written now if the target's stream is between packets, else at its next boundary. */
  private answer(packet: Buffer): void {
    if (this.toClient.buffered === 0 && this.injected.length === 0) this.policy!.toClient(packet);
    else this.injected.push(packet);
  }

  /** The channel ended: files still open are recorded as they stood. */
  close(): void {
    for (const f of this.files.values()) this.finishFile(f, 'channel closed before the file was closed');
    this.files.clear();
    this.dirs.clear();
    this.pending.clear();
  }

  private observe(framer: SftpFramer, chunk: Buffer, from: 'client' | 'target'): void {
    if (this.refused) throw this.refused;
    try {
      framer.push(chunk);
    } catch (err) {
      // Records made for this chunk's earlier packets stay on record; the chunk itself is not forwarded.
      this.gate = [];
      const reason = err instanceof SftpProtocolError ? `malformed SFTP from the ${from} (${(err as Error).message})`
        : err instanceof ReorderBudgetExceededError || err instanceof TrackingLimitError || err instanceof ChannelAbortError ? (err as Error).message
          : `the SFTP stream could not be checked (${(err as Error).message})`;
      this.rec.append('sftp.closed', { ch: this.channel, from, reason });
      this.refused = new ChannelAbortError(reason);
      throw this.refused;
    }
  }

  private record(type: string, data: Record<string, unknown>): void {
    const durable = this.rec.beforeForward(type, { ch: this.channel, via: 'sftp', ...data });
    if (durable) this.gate.push(durable);
  }

  /** Reads one client packet; false when the policy refused it (it is then not forwarded). */
  private request(p: Buffer): boolean {
    const r = new SftpReader(p);
    const type = r.byte();
    if (type === T.INIT) return true;
    const id = r.uint32();
    if (type === T.REALPATH) {
      const p = r.string();
      if (p === '.' || p === '') this.pending.set(id, { kind: 'realpath' });
      return true;
    }
    if (READ_ONLY_TYPES.has(type)) return true;
    switch (type) {
      case T.OPEN: {
        const path = r.string();
        const pflags = r.uint32();
        const attrs = readAttrs(r);
        const op = openOp(pflags);
        const flags = flagNames(pflags);
        if (op === 'download') {
          this.pending.set(id, { kind: 'open', path, op, flags });
          return true;
        }
        const verdict = this.ask(id, op, openOps(pflags), path, undefined, { flags });
        if (verdict === false) return false;
        this.pending.set(id, { kind: 'open', path, op, flags });
        // The permissions apply only to a file the open creates.
        const created = pflags & FXF.CREAT && attrs.mode !== undefined ? { attrs: { mode: attrs.mode } } : {};
        this.record('file.open', { path, mode: op === 'upload' ? 'write' : op, flags, ...created, ...policyField(verdict) });
        return true;
      }
      case T.OPENDIR: this.pending.set(id, { kind: 'opendir', path: r.string() }); return true;
      case T.READ: {
        const handle = r.bytes().toString('latin1');
        const offset = r.uint64();
        const f = this.files.get(handle);
        if (f) f.content.started(offset);
        this.pending.set(id, { kind: 'read', handle, offset });
        return true;
      }
      case T.WRITE: {
        // The handle was opened by an OPEN that is on record (the server refuses writes to others).
        const f = this.files.get(r.bytes().toString('latin1'));
        const offset = r.uint64();
        const data = r.bytes();
        if (f) {
          f.content.started(offset);
          f.content.add(offset, data);
        }
        return true;
      }
      case T.CLOSE: this.pending.set(id, { kind: 'close', handle: r.bytes().toString('latin1') }); return true;
      case T.REMOVE: return this.change(id, 'remove', r.string());
      case T.MKDIR: return this.change(id, 'mkdir', r.string(), undefined, { attrs: readAttrs(r) });
      case T.RMDIR: return this.change(id, 'rmdir', r.string());
      case T.SETSTAT: return this.change(id, 'setstat', r.string(), undefined, { attrs: readAttrs(r) });
      case T.FSETSTAT: {
        const handle = r.bytes();
        return this.change(id, 'fsetstat', this.pathOf(handle), undefined, { attrs: readAttrs(r) });
      }
      case T.RENAME: return this.change(id, 'rename', r.string(), r.string());
      // OpenSSH's sftp sends SYMLINK with its arguments swapped (target first): recorded as sent.
      case T.SYMLINK: return this.change(id, 'symlink', r.string(), r.string());
      case T.EXTENDED: return this.extended(id, r, p.length);
      default:
        // Not a version 3 request: the server may still act on it, so it is on record first.
        return this.change(id, 'unknown', null, undefined, { type, bytes: p.length }, { type });
    }
  }

  private extended(id: number, r: SftpReader, bytes: number): boolean {
    const name = r.string();
    const kind = classifyExtended(name);
    if (kind.kind === 'read-only') return true;
    if (kind.kind === 'unknown') {
      // The server defines what it does: recorded (and gated) as a change of unknown effect.
      const shown = name.length > MAX_NAME ? { name: name.slice(0, MAX_NAME), nameTruncated: true } : { name };
      return this.change(id, 'extended', null, undefined, { ...shown, bytes }, shown);
    }
    switch (kind.name) {
      case 'posix-rename@openssh.com': return this.change(id, 'rename', r.string(), r.string(), { posix: true });
      case 'hardlink@openssh.com': return this.change(id, 'hardlink', r.string(), r.string());
      case 'lsetstat@openssh.com': return this.change(id, 'lsetstat', r.string(), undefined, { attrs: readAttrs(r) });
      case 'copy-data': {
        // Server-side copy from one open handle into another (sftp's `cp`).
        const from = r.bytes();
        const readOffset = r.uint64();
        const length = r.uint64();
        const into = r.bytes();
        const writeOffset = r.uint64();
        // The destination's content now changes without crossing the gateway: its upload hash would be wrong.
        this.files.get(into.toString('latin1'))?.content.changedElsewhere('data was copied into the file on the target (copy-data), so no content hash');
        return this.change(id, 'copy-data', this.pathOf(into), undefined, { from: this.pathOf(from), readOffset, length, writeOffset });
      }
    }
  }

  /** The path a handle was opened with (handles are opaque bytes, shown in hex when unknown). */
  private pathOf(handle: Buffer): string {
    const key = handle.toString('latin1');
    return this.files.get(key)?.path ?? this.dirs.get(key) ?? `(unknown handle ${handle.subarray(0, 64).toString('hex')})`;
  }

  /**
   * A request that changes the target, on record before it is forwarded (`path` null: one whose
   * arguments the tracker cannot read; `what` names it again on its outcome).
   */
  private change(id: number, op: string, path: string | null, to?: string, extra: Record<string, unknown> = {}, what?: Record<string, unknown>): boolean {
    let verdict: Verdict | undefined;
    const asked = path !== null ? policyQuestion(op, path, to) : null;
    if (asked) {
      const v = this.ask(id, op, asked.ops, asked.path, asked.toPath);
      if (v === false) return false;
      verdict = v;
    }
    this.pending.set(id, { kind: 'change', op, path, ...(to !== undefined ? { to } : {}), ...(what ? { what } : {}) });
    this.record('file.request', { op, ...(path !== null ? { path } : {}), ...(to !== undefined ? { to } : {}), ...extra, ...policyField(verdict) });
    return true;
  }

  private reply(p: Buffer): void {
    const r = new SftpReader(p);
    const type = r.byte();
    if (type === T.VERSION) {
      const version = r.uint32();
      // Later versions lay out OPEN, ATTRS and more differently: read as version 3 they could hide a change.
      if (version > SFTP_VERSION) throw new ChannelAbortError(`the target chose SFTP version ${version}; the gateway records version ${SFTP_VERSION} only`);
      return;
    }
    const id = r.uint32();
    const req = this.pending.get(id);
    if (!req) return;
    this.pending.delete(id);
    const status = type === T.STATUS ? r.uint32() : -1;
    const message = type === T.STATUS ? safeString(r) : '';
    switch (req.kind) {
      case 'open':
        if (type === T.HANDLE) {
          const handle = r.bytes().toString('latin1');
          const earlier = this.files.get(handle);
          if (earlier) this.finishFile(earlier, 'the target reused the handle before the file was closed');
          this.files.set(handle, { path: req.path, op: req.op, flags: req.flags, content: new ContentHash(this.budget) });
        } else {
          this.rec.append('file.op', { ch: this.channel, via: 'sftp', op: req.op, path: req.path, ...flagsOf(req), status: statusText(status, message) });
        }
        return;
      case 'opendir':
        if (type === T.HANDLE) this.dirs.set(r.bytes().toString('latin1'), req.path);
        this.rec.append('file.op', { ch: this.channel, via: 'sftp', op: 'list', path: req.path, status: type === T.HANDLE ? 'ok' : statusText(status, message) });
        return;
      case 'read': {
        const f = this.files.get(req.handle);
        if (f && type === T.DATA) f.content.add(req.offset, r.bytes());
        return;
      }
      case 'realpath':
        if (type === T.NAME && r.uint32() >= 1) this.cwd = r.string();
        return;
      case 'close': {
        this.dirs.delete(req.handle);
        const f = this.files.get(req.handle);
        if (!f) return;
        this.files.delete(req.handle);
        this.finishFile(f, status === 0 ? null : statusText(status, message));
        return;
      }
      case 'change':
        this.rec.append('file.op', { ch: this.channel, via: 'sftp', op: req.op, ...(req.path !== null ? { path: req.path } : {}), ...(req.to !== undefined ? { to: req.to } : {}), ...req.what,
          // Any reply but STATUS (EXTENDED_REPLY, say) is the request's success.
          status: type === T.STATUS ? statusText(status, message) : 'ok' });
        return;
    }
  }

  private finishFile(f: OpenFile, problem: string | null): void {
    const c = f.content;
    // size is what was transferred: a resumed transfer (reget, reput) moves only the rest of the file.
    this.rec.append('file.op', {
      ch: this.channel, via: 'sftp', op: f.op, path: f.path, size: c.transferred, ...flagsOf(f),
      ...(c.start !== null && c.start > 0 ? { resumedFrom: c.start, endOffset: c.size } : {}),
      ...c.finish(),
      status: problem ?? 'ok',
    });
  }
}

/** The policy's view of a change the tracker records as `op` (null: nothing the policy names). */
function policyQuestion(op: string, path: string, to: string | undefined): { ops: FileOp[]; path: string; toPath?: string } | null {
  switch (op) {
    case 'remove': case 'mkdir': case 'rmdir': return { ops: [op], path };
    case 'setstat': case 'fsetstat': case 'lsetstat': return { ops: ['setstat'], path };
    case 'rename': return { ops: ['rename'], path, toPath: to! };
    // As sent by OpenSSH (and read by its server): the link's target first, then the link made.
    case 'symlink': return { ops: ['symlink'], path: to!, toPath: path };
    // hardlink@openssh.com: the existing file, then the new name.
    case 'hardlink': return { ops: ['link'], path: to!, toPath: path };
    case 'copy-data': return { ops: ['write'], path };
    default: return null;
  }
}

/** The mutations an OPEN makes, by its flags (a plain upload writes, may create, and truncates). */
function openOps(pflags: number): FileOp[] {
  const ops: FileOp[] = [];
  if (pflags & (FXF.WRITE | FXF.APPEND)) ops.push('write');
  if (pflags & FXF.CREAT) ops.push('create');
  if (pflags & FXF.TRUNC) ops.push('truncate');
  return ops;
}

/** SSH_FXP_STATUS: id, code, message, language tag. */
function statusPacket(id: number, code: number, message: string): Buffer {
  const text = Buffer.from(message, 'utf8');
  const p = Buffer.alloc(4 + 1 + 4 + 4 + 4 + text.length + 4);
  let o = p.writeUInt32BE(p.length - 4, 0);
  o = p.writeUInt8(101, o);
  o = p.writeUInt32BE(id, o);
  o = p.writeUInt32BE(code, o);
  o = p.writeUInt32BE(text.length, o);
  o += text.copy(p, o);
  p.writeUInt32BE(0, o);
  return p;
}

/**
 * WRITE (or APPEND) makes an upload. Without it, TRUNC still empties the file and CREAT may make
 * one: changes too, whatever the handle is used for afterwards.
 */
function openOp(pflags: number): OpenOp {
  if (pflags & (FXF.WRITE | FXF.APPEND)) return 'upload';
  if (pflags & FXF.TRUNC) return 'truncate';
  if (pflags & FXF.CREAT) return 'create';
  return 'download';
}

function flagNames(pflags: number): string[] {
  const names = Object.entries(FXF).filter(([, bit]) => pflags & bit).map(([name]) => name.toLowerCase());
  const unknown = pflags & ~0x3f;
  if (unknown) names.push(`0x${unknown.toString(16)}`);
  return names;
}

/** The open's flags, on the record of an open that is not a plain read or write. */
function flagsOf(f: { op: OpenOp; flags: string[] }): { flags?: string[] } {
  return f.op === 'truncate' || f.op === 'create' ? { flags: f.flags } : {};
}

/** Characters of text a pending request keeps. */
function pendingText(p: Pending): number {
  switch (p.kind) {
    case 'open': case 'opendir': return p.path.length;
    case 'read': case 'close': return p.handle.length;
    case 'realpath': return 0;
    case 'change': return (p.path?.length ?? 0) + (p.to?.length ?? 0) + (p.what ? JSON.stringify(p.what).length : 0);
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
