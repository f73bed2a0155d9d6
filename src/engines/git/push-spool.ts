// A held push on disk: the bytes a guarded push sends are written to a file in the spool
// directory while the gateway decides, read back to resolve deltas, replayed to the target when
// the push is allowed, and removed in every case. Memory stays flat whatever the push's size.
import { createReadStream, mkdirSync, readdirSync, rmSync, type ReadStream } from 'node:fs';
import { open, rm, type FileHandle } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import path from 'node:path';

const PREFIX = 'push-';

export class PushSpool {
  readonly path: string;
  bytes = 0;
  private readonly file: FileHandle;
  private removed = false;

  private constructor(file: string, fh: FileHandle) {
    this.path = file;
    this.file = fh;
  }

  static async create(dir: string): Promise<PushSpool> {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const file = path.join(dir, `${PREFIX}${Date.now()}-${randomBytes(6).toString('hex')}`);
    return new PushSpool(file, await open(file, 'wx+', 0o600));
  }

  async write(chunk: Buffer): Promise<void> {
    let off = 0;
    while (off < chunk.length) {
      const { bytesWritten } = await this.file.write(chunk, off, chunk.length - off, this.bytes + off);
      off += bytesWritten;
    }
    this.bytes += chunk.length;
  }

  /** Bytes [start, end) of what was written. */
  async read(start: number, end: number): Promise<Buffer> {
    const out = Buffer.allocUnsafe(end - start);
    let got = 0;
    while (got < out.length) {
      const { bytesRead } = await this.file.read(out, got, out.length - got, start + got);
      if (bytesRead === 0) throw new Error(`spool file ended at ${start + got} of ${end}`);
      got += bytesRead;
    }
    return out;
  }

  /** The whole file as a stream; the file is removed once the stream closes. */
  replay(): ReadStream {
    const s = createReadStream(this.path, { highWaterMark: 256 * 1024 });
    s.once('close', () => { void this.remove(); });
    return s;
  }

  async remove(): Promise<void> {
    if (this.removed) return;
    this.removed = true;
    await this.file.close().catch(() => {});
    await rm(this.path, { force: true }).catch(() => {});
  }
}

/** Removes spool files a previous run left behind (a crash while holding a push). */
export function clearSpoolDir(dir: string): number {
  let n = 0;
  try {
    for (const name of readdirSync(dir)) {
      if (!name.startsWith(PREFIX)) continue;
      rmSync(path.join(dir, name), { force: true });
      n++;
    }
  } catch { /* no directory yet */ }
  return n;
}
