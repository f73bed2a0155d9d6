// Reading a pushed pack as it arrives, with bounded memory and without stalling the event loop,
// to learn which commits it carries and their parents (the fast-forward walk needs nothing else).
//
// Every object's zlib stream is inflated to find where the next object starts, but only commit
// contents are kept: blobs, trees and tags are counted and dropped. Small objects (up to
// `syncInflateBytes` declared) are inflated in one small synchronous step over a bounded window;
// larger ones go through a streaming inflater (node:zlib runs it on the thread pool), fed chunk by
// chunk. Commit ids are computed from their content, never taken from the client.
//
// Deltas: an OFS_DELTA's type is its base's type, known from the base's offset. A delta whose
// base is a commit is resolved (from a small cache of commit contents, or at the end by re-reading
// the pack through `readRange`). A REF_DELTA names its base by id; only commit ids are computed
// here, so a REF_DELTA against a commit in the pack resolves (also when the base comes later),
// and one against a tree or blob — or a base outside the pack (a thin pack) — stays unresolved.
// That is safe: a commit the inspection does not learn is an exit of the ancestry walk, which the
// target cannot vouch for, so a protected update through it is refused, never allowed.

import { createHash, type Hash } from 'node:crypto';
import { promisify } from 'node:util';
import zlib from 'node:zlib';
import { GitProtocolError } from './pkt-line.ts';
import { applyDelta, commitParents } from './pack.ts';
import type { ObjectFormat } from './refs.ts';

const OBJ_COMMIT = 1;
const OBJ_TAG = 4;
const OBJ_OFS_DELTA = 6;
const OBJ_REF_DELTA = 7;
const TYPE_NAMES = ['', 'commit', 'tree', 'blob', 'tag', '', 'ofsDelta', 'refDelta'] as const;

const inflateAsync = promisify(zlib.inflate) as (buf: Buffer, opts: zlib.ZlibOptions) => Promise<Buffer>;

export interface PackInspectorOptions {
  /** Largest commit (or commit delta) inspected; a larger one makes the pack uninspectable. */
  maxCommitBytes?: number;
  /** Most objects a pack may hold (each costs a few bytes of bookkeeping). */
  maxObjects?: number;
  /** Most deltas kept for resolution at the end (REF_DELTAs with unknown bases, commit deltas). */
  maxPendingDeltas?: number;
  /** Commit contents kept to resolve commit deltas without re-reading the pack. */
  cacheBytes?: number;
  /** Objects declared at most this size are inflated in one synchronous step. */
  syncInflateBytes?: number;
}

/** Reads bytes [start, end) of the pack (the spool file) for deltas resolved at the end. */
export type ReadRange = (start: number, end: number) => Promise<Buffer>;

export interface PackInspection {
  version: number;
  objectCount: number;
  /** commit id → parent ids, for every commit the inspection learned. */
  commits: Map<string, string[]>;
  /** Deltas whose type was not learned (thin bases, REF_DELTAs against trees or blobs). */
  unresolvedDeltas: number;
  stored: { commit: number; tree: number; blob: number; tag: number; ofsDelta: number; refDelta: number };
  checksum: string;
  /** Pack bytes read, trailer included. */
  bytes: number;
}

/** What is kept about an object that is, or may turn out to be, a commit. */
interface Rec {
  type: number; // stored type
  size: number; // declared (inflated) size of the stored data
  dataStart: number;
  end: number;
  base: number; // index of the base (deltas), -1 while unknown
}

const EMPTY = Buffer.alloc(0);
/** Input a synchronous step looks at: bounds the work of one step whatever the object claims. */
const SYNC_WINDOW = 256 * 1024;

function corrupt(message: string): GitProtocolError {
  return new GitProtocolError(`pack corrupt: ${message}`);
}

/** Insertion-ordered cache of contents by object index, bounded in bytes (oldest dropped first). */
class ContentCache {
  private readonly map = new Map<number, Buffer>();
  private bytes = 0;
  private readonly limit: number;
  constructor(limit: number) { this.limit = limit; }
  get(i: number): Buffer | undefined { return this.map.get(i); }
  put(i: number, content: Buffer): void {
    if (content.length > this.limit || this.map.has(i)) return;
    this.map.set(i, content);
    this.bytes += content.length;
    for (const [k, v] of this.map) {
      if (this.bytes <= this.limit) break;
      this.map.delete(k);
      this.bytes -= v.length;
    }
  }
}

/** One object's zlib stream, inflated incrementally; output is counted, and kept only when asked. */
class StreamInflater {
  private readonly z = zlib.createInflate({ chunkSize: 64 * 1024 });
  private fed = 0;
  private out = 0;
  private readonly chunks: Buffer[] | null;
  private error: Error | null = null;
  private readonly ended: Promise<void>;
  private readonly declared: number;

  constructor(declared: number, keep: boolean) {
    this.declared = declared;
    this.chunks = keep ? [] : null;
    this.z.on('data', (c: Buffer) => {
      this.out += c.length;
      if (this.out > declared) {
        this.error ??= new Error(`inflates to more than its declared ${declared} bytes`);
        this.z.destroy();
      } else {
        this.chunks?.push(c);
      }
    });
    this.z.on('error', (err: Error) => { this.error ??= err; });
    this.ended = new Promise((resolve) => { this.z.once('end', resolve); this.z.once('close', resolve); });
  }

  /** Feeds a piece; says how much of it belongs to this stream and whether the stream is complete. */
  feed(piece: Buffer): Promise<{ consumed: number; ended: boolean }> {
    return new Promise((resolve, reject) => {
      this.z.write(piece, (err) => {
        if (this.error || err) return reject(this.error ?? err);
        const before = this.fed;
        this.fed += piece.length;
        // zlib stops consuming at the end of its stream: unconsumed input means the stream ended.
        resolve({ consumed: this.z.bytesWritten - before, ended: this.z.bytesWritten < this.fed });
      });
    });
  }

  async content(): Promise<Buffer | null> {
    await this.ended;
    if (this.error) throw this.error;
    if (this.out !== this.declared) throw new Error(`inflates to ${this.out} bytes, declared ${this.declared}`);
    return this.chunks ? Buffer.concat(this.chunks, this.out) : null;
  }

  destroy(): void { this.z.destroy(); }
}

/**
 * Push the pack's bytes with `write` (awaiting each call), then call `end`. Errors are
 * GitProtocolErrors naming the offset and the problem; after one, the inspector stays failed.
 */
export class PackInspector {
  private readonly algo: string;
  private readonly hashLen: number;
  private readonly hexLen: number;
  private readonly maxCommitBytes: number;
  private readonly maxObjects: number;
  private readonly maxPending: number;
  private readonly syncBytes: number;
  private readonly hash: Hash;
  private readonly cache: ContentCache;

  private phase: 'header' | 'object' | 'data' | 'trailer' = 'header';
  private buf: Buffer = EMPTY;
  /** Pack offset of buf[0]. */
  private pos = 0;
  private version = 0;
  private count = 0;
  private index = 0;
  private trailer: Buffer = EMPTY;
  private failed: GitProtocolError | null = null;

  // Per object, in pack order: offset, stored type, final type (0 while unknown).
  private offsets = new Float64Array(1024);
  private storedTypes = new Uint8Array(1024);
  private finalTypes = new Uint8Array(1024);

  private readonly recs = new Map<number, Rec>();
  private readonly idIndex = new Map<string, number>();
  private readonly refWaiters = new Map<string, number[]>();
  private readonly ofsWaiters = new Map<number, number[]>();
  /** Commit deltas whose base content was not at hand while streaming. */
  private readonly deferred: number[] = [];
  private readonly commits = new Map<string, string[]>();
  private readonly stored = { commit: 0, tree: 0, blob: 0, tag: 0, ofsDelta: 0, refDelta: 0 };

  // The object being read.
  private cur: { index: number; offset: number; type: number; size: number; dataStart: number; keep: boolean; triedSync: boolean } | null = null;
  private inflater: StreamInflater | null = null;

  constructor(format: ObjectFormat, options: PackInspectorOptions = {}) {
    this.algo = format === 'sha256' ? 'sha256' : 'sha1';
    this.hashLen = format === 'sha256' ? 32 : 20;
    this.hexLen = this.hashLen * 2;
    this.maxCommitBytes = options.maxCommitBytes ?? 16 * 1024 * 1024;
    this.maxObjects = options.maxObjects ?? 10_000_000;
    this.maxPending = options.maxPendingDeltas ?? 1_000_000;
    this.syncBytes = options.syncInflateBytes ?? 64 * 1024;
    this.cache = new ContentCache(options.cacheBytes ?? 32 * 1024 * 1024);
    this.hash = createHash(this.algo);
  }

  /** Pack bytes read so far. */
  get bytes(): number {
    return this.pos + this.buf.length + this.trailer.length;
  }

  async write(chunk: Buffer): Promise<void> {
    if (this.failed) throw this.failed;
    try {
      await this.consume(chunk);
    } catch (err) {
      throw this.fail(err);
    }
  }

  /** Checks the trailer and resolves the remaining commit deltas (re-reading them with `readRange`). */
  async end(readRange?: ReadRange): Promise<PackInspection> {
    if (this.failed) throw this.failed;
    try {
      return await this.finish(readRange);
    } catch (err) {
      throw this.fail(err);
    }
  }

  /** Stops an inspection that will not be finished (frees the inflater). */
  abandon(): void {
    this.inflater?.destroy();
    this.inflater = null;
    this.failed ??= new GitProtocolError('pack inspection abandoned');
  }

  private fail(err: unknown): GitProtocolError {
    this.inflater?.destroy();
    this.inflater = null;
    this.failed ??= err instanceof GitProtocolError ? err : new GitProtocolError(`pack unreadable: ${(err as Error).message}`);
    return this.failed;
  }

  private advance(n: number): void {
    if (n === 0) return;
    this.hash.update(this.buf.subarray(0, n));
    this.buf = n === this.buf.length ? EMPTY : this.buf.subarray(n);
    this.pos += n;
  }

  private async consume(chunk: Buffer): Promise<void> {
    if (chunk.length === 0) return;
    // Left over between chunks: at most a partial object header (a few dozen bytes).
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    while (this.buf.length > 0) {
      if (this.phase === 'header') {
        if (this.buf.length < 12) return;
        this.readPackHeader();
      } else if (this.phase === 'object') {
        if (!this.readObjectHeader()) return;
      } else if (this.phase === 'data') {
        if (!(await this.inflateSome())) return;
        this.phase = this.index < this.count ? 'object' : 'trailer';
      } else {
        if (this.trailer.length + this.buf.length > this.hashLen) {
          throw corrupt(`${this.trailer.length + this.buf.length - this.hashLen} unexpected byte(s) after the ${this.count} object(s) and the checksum`);
        }
        this.trailer = Buffer.concat([this.trailer, this.buf]);
        this.buf = EMPTY;
      }
    }
  }

  private readPackHeader(): void {
    const b = this.buf;
    if (b.toString('latin1', 0, 4) !== 'PACK') throw new GitProtocolError(`not a pack: starts with ${JSON.stringify(b.toString('latin1', 0, 4))}`);
    this.version = b.readUInt32BE(4);
    if (this.version !== 2 && this.version !== 3) throw new GitProtocolError(`unsupported pack version ${this.version}`);
    this.count = b.readUInt32BE(8);
    if (this.count > this.maxObjects) throw new GitProtocolError(`pack declares ${this.count} objects, more than the ${this.maxObjects} the gateway inspects`);
    this.advance(12);
    this.phase = this.count > 0 ? 'object' : 'trailer';
  }

  /** Parses the next object's header if all of it has arrived; false when more bytes are needed. */
  private readObjectHeader(): boolean {
    const b = this.buf;
    const offset = this.pos;
    const i = this.index;
    let p = 0;
    let c = b[p++];
    const type = (c >> 4) & 7;
    let size = c & 15;
    let mult = 16;
    while (c & 0x80) {
      if (p >= b.length) return false;
      c = b[p++];
      size += (c & 0x7f) * mult;
      mult *= 128;
      if (mult > 2 ** 53) throw corrupt(`object ${i + 1} at offset ${offset} has an overlong size header`);
    }
    let base = -1;
    let baseId: string | null = null;
    if (type === OBJ_OFS_DELTA) {
      if (p >= b.length) return false;
      c = b[p++];
      let rel = c & 0x7f;
      while (c & 0x80) {
        if (p >= b.length) return false;
        c = b[p++];
        rel = (rel + 1) * 128 + (c & 0x7f);
        if (rel > offset) break;
      }
      base = rel === 0 || rel > offset - 12 ? -1 : this.indexAt(offset - rel);
      if (base < 0) throw corrupt(`delta at offset ${offset} has base offset -${rel} (offset ${offset - rel}), which is not the start of an earlier object`);
    } else if (type === OBJ_REF_DELTA) {
      if (p + this.hashLen > b.length) return false;
      baseId = b.toString('hex', p, p + this.hashLen);
      p += this.hashLen;
    } else if (type < OBJ_COMMIT || type > OBJ_TAG) {
      throw corrupt(`object ${i + 1} at offset ${offset} has invalid type ${type}`);
    }
    this.stored[TYPE_NAMES[type] as keyof PackInspection['stored']]++;

    // The final type: known for whole objects, from the base for deltas (0 while unknown).
    let final = type <= OBJ_TAG ? type : 0;
    if (type === OBJ_OFS_DELTA) final = this.finalTypes[base];
    if (type === OBJ_REF_DELTA) {
      const known = this.idIndex.get(baseId!);
      if (known !== undefined) { base = known; final = OBJ_COMMIT; }
    }
    const keep = final === OBJ_COMMIT;
    if (keep && size > this.maxCommitBytes) {
      throw new GitProtocolError(`commit ${type === OBJ_COMMIT ? '' : 'delta '}of ${size} bytes at offset ${offset} is larger than the ${this.maxCommitBytes} bytes the gateway inspects`);
    }
    this.grow(i);
    this.offsets[i] = offset;
    this.storedTypes[i] = type;
    this.finalTypes[i] = final;
    if (keep || final === 0) {
      if (this.recs.size >= this.maxPending) throw new GitProtocolError(`pack has more than ${this.maxPending} commits and deltas to resolve, more than the gateway inspects`);
      this.recs.set(i, { type, size, dataStart: offset + p, end: -1, base });
      if (final === 0 && type === OBJ_OFS_DELTA) pushTo(this.ofsWaiters, base, i);
      if (final === 0 && type === OBJ_REF_DELTA) pushTo(this.refWaiters, baseId!, i);
    }
    this.advance(p);
    this.cur = { index: i, offset, type, size, dataStart: offset + p, keep, triedSync: false };
    this.phase = 'data';
    return true;
  }

  private grow(i: number): void {
    if (i < this.offsets.length) return;
    const n = this.offsets.length * 2;
    const o = new Float64Array(n); o.set(this.offsets); this.offsets = o;
    const s = new Uint8Array(n); s.set(this.storedTypes); this.storedTypes = s;
    const f = new Uint8Array(n); f.set(this.finalTypes); this.finalTypes = f;
  }

  /** Index of the object starting at `offset` (binary search over the offsets read so far), or -1. */
  private indexAt(offset: number): number {
    let lo = 0;
    let hi = this.index - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const v = this.offsets[mid];
      if (v === offset) return mid;
      if (v < offset) lo = mid + 1;
      else hi = mid - 1;
    }
    return -1;
  }

  /** Inflates the current object from buf; true once it is complete (buf then starts after it). */
  private async inflateSome(): Promise<boolean> {
    const cur = this.cur!;
    const where = () => `object ${cur.index + 1} of ${this.count} at offset ${cur.offset}`;
    if (this.inflater === null && !cur.triedSync && cur.size <= this.syncBytes) {
      cur.triedSync = true;
      const window = this.buf.subarray(0, Math.min(this.buf.length, SYNC_WINDOW));
      let r = null as { buffer: Buffer; engine: { bytesWritten: number } } | null;
      try {
        r = zlib.inflateSync(window, { info: true, maxOutputLength: Math.max(1, cur.size) }) as unknown as { buffer: Buffer; engine: { bytesWritten: number } };
      } catch (err) {
        const code = (err as { code?: string }).code;
        if (code === 'ERR_BUFFER_TOO_LARGE') throw corrupt(`${where()} inflates to more than its declared ${cur.size} bytes`);
        // Z_BUF_ERROR: the stream goes on past what has arrived (or past the window): stream it.
        if (code !== 'Z_BUF_ERROR') throw corrupt(`${where()}: zlib: ${(err as Error).message}`);
      }
      if (r !== null) {
        if (r.buffer.length !== cur.size) throw corrupt(`${where()} inflates to ${r.buffer.length} bytes, declared ${cur.size}`);
        this.advance(r.engine.bytesWritten);
        this.objectDone(cur.keep ? r.buffer : null);
        return true;
      }
    }
    this.inflater ??= new StreamInflater(cur.size, cur.keep);
    let step: { consumed: number; ended: boolean };
    try {
      step = await this.inflater.feed(this.buf);
    } catch (err) {
      throw corrupt(`${where()}: ${/declared/.test((err as Error).message) ? '' : 'zlib: '}${(err as Error).message}`);
    }
    this.advance(step.consumed);
    if (!step.ended) return false;
    let content: Buffer | null;
    try {
      content = await this.inflater.content();
    } catch (err) {
      throw corrupt(`${where()} ${(err as Error).message}`);
    } finally {
      this.inflater = null;
    }
    this.objectDone(content);
    return true;
  }

  private objectDone(content: Buffer | null): void {
    const cur = this.cur!;
    this.cur = null;
    this.index++;
    const rec = this.recs.get(cur.index);
    if (rec) rec.end = this.pos;
    if (!cur.keep) return;
    if (cur.type === OBJ_COMMIT) {
      this.learnCommit(cur.index, content!);
      return;
    }
    // A commit delta: resolved now when its base is at hand, else at the end.
    const base = this.cache.get(rec!.base);
    if (base === undefined) {
      this.deferred.push(cur.index);
      return;
    }
    this.learnCommit(cur.index, this.applyCommitDelta(base, content!, cur.offset));
  }

  private applyCommitDelta(base: Buffer, delta: Buffer, offset: number): Buffer {
    try {
      return applyDelta(base, delta, this.maxCommitBytes);
    } catch (err) {
      if (!(err instanceof GitProtocolError)) throw err;
      throw corrupt(`delta at offset ${offset}: ${err.message}`);
    }
  }

  private learnCommit(i: number, content: Buffer): string {
    const id = createHash(this.algo).update(`commit ${content.length}\0`).update(content).digest('hex');
    this.commits.set(id, commitParents(content, this.hexLen, id));
    if (!this.idIndex.has(id)) this.idIndex.set(id, i);
    this.finalTypes[i] = OBJ_COMMIT;
    this.cache.put(i, content);
    return id;
  }

  private async finish(readRange?: ReadRange): Promise<PackInspection> {
    if (this.phase === 'header') throw new GitProtocolError(`pack truncated: ${this.bytes} bytes is less than a pack header`);
    if (this.phase !== 'trailer') {
      throw new GitProtocolError(`pack truncated: it ended at offset ${this.bytes}, in object ${this.index + 1} of the ${this.count} its header announces`);
    }
    if (this.trailer.length < this.hashLen) throw new GitProtocolError(`pack truncated: its checksum is ${this.trailer.length} of ${this.hashLen} bytes`);
    const sum = this.hash.digest();
    if (!sum.equals(this.trailer)) {
      throw new GitProtocolError(`pack checksum mismatch: trailer ${this.trailer.toString('hex')}, content hashes to ${sum.toString('hex')}`);
    }

    // Commit deltas left for the end, and REF_DELTAs whose base turned out to be a commit.
    const queue = [...this.deferred];
    const wake = (id: string | null, i: number) => {
      const byId = id === null ? undefined : this.refWaiters.get(id);
      if (byId) {
        this.refWaiters.delete(id!);
        for (const j of byId) { this.recs.get(j)!.base = i; this.finalTypes[j] = OBJ_COMMIT; queue.push(j); }
      }
      const byOfs = this.ofsWaiters.get(i);
      if (byOfs) {
        this.ofsWaiters.delete(i);
        for (const j of byOfs) { this.finalTypes[j] = OBJ_COMMIT; queue.push(j); }
      }
    };
    for (const [id, i] of this.idIndex) wake(id, i);
    if (readRange) {
      for (let q = 0; q < queue.length; q++) {
        const i = queue[q];
        const content = await this.contentOf(i, readRange);
        const rec = this.recs.get(i)!;
        if (rec.size > this.maxCommitBytes) throw new GitProtocolError(`commit delta of ${rec.size} bytes at offset ${this.offsets[i]} is larger than the ${this.maxCommitBytes} bytes the gateway inspects`);
        const id = this.learnCommit(i, content);
        wake(id, i);
      }
    }
    // Without readRange the queued commit deltas stay unresolved too.
    let unresolved = readRange ? 0 : queue.length;
    for (let i = 0; i < this.count; i++) if (this.storedTypes[i] > OBJ_TAG && this.finalTypes[i] === 0) unresolved++;
    return {
      version: this.version, objectCount: this.count, commits: this.commits, unresolvedDeltas: unresolved,
      stored: { ...this.stored }, checksum: this.trailer.toString('hex'), bytes: this.bytes,
    };
  }

  /** The content of commit-typed object `i`, re-read from the pack along its delta chain as needed. */
  private async contentOf(i: number, readRange: ReadRange): Promise<Buffer> {
    const chain: number[] = [];
    let j = i;
    let content = this.cache.get(j);
    while (content === undefined) {
      chain.push(j);
      const rec = this.recs.get(j);
      if (rec === undefined) throw corrupt(`delta base at offset ${this.offsets[j]} cannot be read back`);
      if (rec.type <= OBJ_TAG) break;
      j = rec.base;
      if (chain.length > this.count) throw corrupt(`delta chain at offset ${this.offsets[i]} loops`);
      content = this.cache.get(j);
    }
    for (let k = chain.length - 1; k >= 0; k--) {
      const n = chain[k];
      const rec = this.recs.get(n)!;
      const data = await this.inflateAt(n, rec, readRange);
      content = rec.type <= OBJ_TAG ? data : this.applyCommitDelta(content!, data, this.offsets[n]);
      this.cache.put(n, content);
    }
    return content!;
  }

  private async inflateAt(n: number, rec: Rec, readRange: ReadRange): Promise<Buffer> {
    const raw = await readRange(rec.dataStart, rec.end);
    let data: Buffer;
    try {
      data = await inflateAsync(raw, { maxOutputLength: Math.max(1, rec.size) });
    } catch (err) {
      throw corrupt(`object at offset ${this.offsets[n]} read back: zlib: ${(err as Error).message}`);
    }
    if (data.length !== rec.size) throw corrupt(`object at offset ${this.offsets[n]} read back inflates to ${data.length} bytes, declared ${rec.size}`);
    return data;
  }
}

function pushTo<K>(map: Map<K, number[]>, key: K, value: number): void {
  const list = map.get(key);
  if (list === undefined) map.set(key, [value]);
  else list.push(value);
}

/** Inspects a whole pack held in memory (tests, small packs), in chunks of `chunkBytes`. */
export async function inspectPack(pack: Buffer, format: ObjectFormat, options: PackInspectorOptions & { chunkBytes?: number } = {}): Promise<PackInspection> {
  const inspector = new PackInspector(format, options);
  const step = options.chunkBytes ?? 64 * 1024;
  for (let off = 0; off < pack.length; off += step) await inspector.write(pack.subarray(off, Math.min(pack.length, off + step)));
  return inspector.end(async (s, e) => pack.subarray(s, e));
}
