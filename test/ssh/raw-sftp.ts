// A hand-built SFTP v3 client over an ssh2 session channel (subsystem "sftp"), for sequences the
// OpenSSH client never sends: opens with odd flags, FSETSTAT, unknown extensions, thousands of
// handles with out-of-order writes, malformed packets. Packets are built byte by byte; replies
// are matched to requests by id.
import { readFileSync } from 'node:fs';
import { Client, type ClientChannel } from 'ssh2';

export const FXP = {
  INIT: 1, VERSION: 2, OPEN: 3, CLOSE: 4, READ: 5, WRITE: 6, LSTAT: 7, FSTAT: 8, SETSTAT: 9, FSETSTAT: 10, OPENDIR: 11, READDIR: 12,
  REMOVE: 13, MKDIR: 14, RMDIR: 15, REALPATH: 16, STAT: 17, RENAME: 18, READLINK: 19, SYMLINK: 20,
  STATUS: 101, HANDLE: 102, DATA: 103, NAME: 104, ATTRS: 105, EXTENDED: 200, EXTENDED_REPLY: 201,
} as const;
export const FXF = { READ: 0x01, WRITE: 0x02, APPEND: 0x04, CREAT: 0x08, TRUNC: 0x10, EXCL: 0x20 } as const;

export function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
}

export function u64(n: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt(n));
  return b;
}

export function str(s: string | Buffer): Buffer {
  const b = typeof s === 'string' ? Buffer.from(s) : s;
  return Buffer.concat([u32(b.length), b]);
}

/** ATTRS with only permissions (or none). */
export function attrs(mode?: number): Buffer {
  return mode === undefined ? u32(0) : Buffer.concat([u32(0x4), u32(mode)]);
}

/** One framed packet: length, type, body. */
export function packet(type: number, ...body: Buffer[]): Buffer {
  const payload = Buffer.concat([Buffer.from([type]), ...body]);
  return Buffer.concat([u32(payload.length), payload]);
}

export interface Reply { type: number; id: number; body: Buffer }

export interface RawSftpOptions {
  port: number;
  user: string;
  privateKeyFile: string;
  /** Run this command (an SFTP server run as an exec, like `sftp -s`) instead of the sftp subsystem. */
  exec?: string;
  /** Do not exchange INIT / VERSION (the caller inspects what comes first). */
  skipInit?: boolean;
}

export class RawSftp {
  readonly ssh: Client;
  readonly channel: ClientChannel;
  private nextId = 1;
  private buf: Buffer = Buffer.alloc(0);
  private readonly waiting = new Map<number, (r: Reply) => void>();
  private stderrText = '';
  /** Settles when the channel closes (with its exit code, if any). */
  readonly closed: Promise<{ code: number | null }>;
  version = 0;

  private constructor(ssh: Client, channel: ClientChannel) {
    this.ssh = ssh;
    this.channel = channel;
    let code: number | null = null;
    channel.on('exit', (c: number | null) => { code = c; });
    this.closed = new Promise((resolve) => channel.on('close', () => resolve({ code })));
    channel.stderr.on('data', (d: Buffer) => { this.stderrText += d.toString(); });
    channel.on('data', (d: Buffer) => this.onData(d));
  }

  /** Connects, starts the sftp subsystem and exchanges INIT / VERSION. */
  static async connect(o: RawSftpOptions): Promise<RawSftp> {
    const ssh = new Client();
    await new Promise<void>((resolve, reject) => {
      ssh.once('ready', () => resolve());
      ssh.once('error', reject);
      ssh.connect({ host: '127.0.0.1', port: o.port, username: o.user, privateKey: readFileSync(o.privateKeyFile), readyTimeout: 20_000 });
    });
    ssh.on('error', () => { /* the channel's close says what happened */ });
    const channel = await new Promise<ClientChannel>((resolve, reject) => {
      const done = (err: Error | undefined, ch: ClientChannel) => (err ? reject(err) : resolve(ch));
      if (o.exec) ssh.exec(o.exec, done);
      else ssh.subsys('sftp', done);
    });
    const c = new RawSftp(ssh, channel);
    if (o.skipInit) return c;
    const version = c.waitFor(0);
    channel.write(packet(FXP.INIT, u32(3)));
    c.version = (await version).id; // VERSION carries the version where replies carry their id
    return c;
  }

  get stderr(): string { return this.stderrText; }

  private onData(d: Buffer): void {
    this.buf = this.buf.length ? Buffer.concat([this.buf, d]) : d;
    while (this.buf.length >= 4) {
      const len = this.buf.readUInt32BE(0);
      if (this.buf.length < 4 + len) break;
      const p = this.buf.subarray(4, 4 + len);
      this.buf = this.buf.subarray(4 + len);
      const type = p[0]!;
      const id = p.readUInt32BE(1);
      const key = type === FXP.VERSION ? 0 : id;
      const done = this.waiting.get(key);
      this.waiting.delete(key);
      done?.({ type, id, body: p.subarray(5) });
    }
  }

  private waitFor(id: number): Promise<Reply> {
    return new Promise((resolve) => this.waiting.set(id, resolve));
  }

  /** Sends a request with a fresh id; resolves with its reply (never, if the channel closes first). */
  request(type: number, ...body: Buffer[]): Promise<Reply> {
    const id = this.nextId++;
    const reply = this.waitFor(id);
    this.channel.write(packet(type, u32(id), ...body));
    return reply;
  }

  /** Like request(), but resolves with null when the channel closes before the reply. */
  requestOrClose(type: number, ...body: Buffer[]): Promise<Reply | null> {
    return Promise.race([this.request(type, ...body), this.closed.then(() => null)]);
  }

  /** Builds a request packet with a fresh id, to send later (several in one write). */
  build(type: number, ...body: Buffer[]): { id: number; bytes: Buffer; reply: Promise<Reply> } {
    const id = this.nextId++;
    return { id, bytes: packet(type, u32(id), ...body), reply: this.waitFor(id) };
  }

  /** Writes raw bytes; resolves once the channel accepted them (backpressure). */
  write(bytes: Buffer): Promise<void> {
    return new Promise((resolve) => {
      if (this.channel.write(bytes)) resolve();
      else this.channel.once('drain', () => resolve());
    });
  }

  async open(path: string, flags: number, mode?: number): Promise<Buffer> {
    const r = await this.request(FXP.OPEN, str(path), u32(flags), attrs(mode));
    if (r.type !== FXP.HANDLE) throw new Error(`open ${path} failed: ${statusOf(r)}`);
    return readString(r.body, 0);
  }

  async close(handle: Buffer): Promise<Reply> {
    return this.request(FXP.CLOSE, str(handle));
  }

  end(): void {
    this.ssh.end();
  }
}

/** The STATUS code of a reply (-1 when it is no STATUS). */
export function statusCode(r: Reply | null): number {
  return r && r.type === FXP.STATUS ? r.body.readUInt32BE(0) : -1;
}

/** The STATUS code and message of a reply (or its type). */
export function statusOf(r: Reply | null): string {
  if (!r) return 'channel closed';
  if (r.type !== FXP.STATUS) return `type ${r.type}`;
  const code = r.body.readUInt32BE(0);
  return `${code} ${r.body.length > 8 ? readString(r.body, 4).toString() : ''}`.trim();
}

function readString(b: Buffer, off: number): Buffer {
  const len = b.readUInt32BE(off);
  return b.subarray(off + 4, off + 4 + len);
}
