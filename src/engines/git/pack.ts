// Reading a version 2 (or 3) pack to learn which commits it carries and their parents.
//
// Layout: "PACK", version, object count (all 32-bit big-endian); per object a type/size varint,
// for OFS_DELTA a backwards offset to the base, for REF_DELTA the base's id, then a zlib stream;
// finally the hash of everything before it. Object ids are not in the pack: each is the hash of
// "<type> <size>\0<content>", so deltas must be applied to learn them.
//
// Memory: the pack itself is the caller's buffer. Non-delta objects are inflated once to find
// where they end and to hash them, then dropped; deltas are resolved afterwards walking from each
// base down its delta tree (as git index-pack does), holding only the contents along the current
// chain, so the peak is about (delta chain depth + 1) × object size, plus a small record per object.

import { createHash } from 'node:crypto';
import { constants as bufferConstants } from 'node:buffer';
import zlib from 'node:zlib';
import { GitProtocolError } from './pkt-line.ts';
import type { ObjectFormat } from './refs.ts';

const OBJ_COMMIT = 1;
const OBJ_TREE = 2;
const OBJ_BLOB = 3;
const OBJ_TAG = 4;
const OBJ_OFS_DELTA = 6;
const OBJ_REF_DELTA = 7;

const TYPE_NAMES = ['', 'commit', 'tree', 'blob', 'tag'];

export interface PackCommits {
  /** Pack format version (2 or 3; the same layout). */
  version: number;
  objectCount: number;
  /** commit id → parent ids, for every commit in the pack (including ones stored as deltas). */
  commits: Map<string, string[]>;
  /** Deltas whose base is not in the pack (a thin pack's bases live in the receiving repository). */
  unresolvedDeltas: number;
  /** Objects per kind as stored (deltas counted under ofsDelta/refDelta, not their final type). */
  stored: { commit: number; tree: number; blob: number; tag: number; ofsDelta: number; refDelta: number };
  /** Resolved objects by final type, deltas included. */
  resolved: { commit: number; tree: number; blob: number; tag: number };
  /** The pack's trailing checksum, hex. */
  checksum: string;
}

export interface ReadPackOptions {
  /** Largest object (or delta result) inflated; larger ones make the pack unreadable here. */
  maxObjectBytes?: number;
}

interface Entry {
  offset: number;
  type: number; // stored type
  size: number; // inflated size of the stored data (the delta's size for deltas)
  dataStart: number;
  baseOffset: number; // OFS_DELTA
  baseId: string | null; // REF_DELTA
  id: string | null; // known for non-delta objects and resolved deltas
}

function hashObject(algo: string, type: number, content: Buffer): string {
  return createHash(algo).update(`${TYPE_NAMES[type]} ${content.length}\0`).update(content).digest('hex');
}

const HEX_LOWER = /^[0-9a-f]+$/;

/** Parent ids from a commit's header: "tree <id>" then zero or more "parent <id>" lines, as git parses it. */
export function commitParents(content: Buffer, hexLen: number, id = '?'): string[] {
  const bad = (why: string) => new GitProtocolError(`malformed commit ${id}: ${why}`);
  if (content.toString('latin1', 0, 5) !== 'tree ' || content[5 + hexLen] !== 0x0a) throw bad('no "tree" line');
  let pos = 6 + hexLen;
  const parents: string[] = [];
  while (content.toString('latin1', pos, pos + 7) === 'parent ') {
    const p = content.toString('latin1', pos + 7, pos + 7 + hexLen);
    if (p.length !== hexLen || !HEX_LOWER.test(p) || content[pos + 7 + hexLen] !== 0x0a) throw bad('bad "parent" line');
    parents.push(p);
    pos += 8 + hexLen;
  }
  return parents;
}

/** Applies a git delta to `base`. */
export function applyDelta(base: Buffer, delta: Buffer, maxBytes = bufferConstants.MAX_LENGTH): Buffer {
  let p = 0;
  const varint = (): number => {
    let v = 0;
    let mult = 1;
    for (;;) {
      if (p >= delta.length) throw new GitProtocolError('delta truncated in its size header');
      const c = delta[p++];
      v += (c & 0x7f) * mult;
      mult *= 128;
      if ((c & 0x80) === 0) return v;
      if (mult > 2 ** 49) throw new GitProtocolError('delta size header too long');
    }
  };
  const srcSize = varint();
  if (srcSize !== base.length) throw new GitProtocolError(`delta expects a base of ${srcSize} bytes but the base has ${base.length}`);
  const dstSize = varint();
  if (dstSize > maxBytes) throw new GitProtocolError(`delta result of ${dstSize} bytes exceeds the ${maxBytes}-byte limit`);
  const out = Buffer.allocUnsafe(dstSize);
  let o = 0;
  while (p < delta.length) {
    const op = delta[p++];
    if (op & 0x80) {
      // Copy from base: which offset/size bytes follow is given by the opcode's low 7 bits.
      let n = 0;
      for (let bit = 0x01; bit <= 0x40; bit <<= 1) if (op & bit) n++;
      if (p + n > delta.length) throw new GitProtocolError('delta truncated in a copy instruction');
      let cpOff = 0;
      let cpSize = 0;
      if (op & 0x01) cpOff += delta[p++];
      if (op & 0x02) cpOff += delta[p++] * 0x100;
      if (op & 0x04) cpOff += delta[p++] * 0x10000;
      if (op & 0x08) cpOff += delta[p++] * 0x1000000;
      if (op & 0x10) cpSize += delta[p++];
      if (op & 0x20) cpSize += delta[p++] * 0x100;
      if (op & 0x40) cpSize += delta[p++] * 0x10000;
      if (cpSize === 0) cpSize = 0x10000;
      if (cpOff + cpSize > base.length || o + cpSize > dstSize) throw new GitProtocolError('delta copy instruction out of bounds');
      base.copy(out, o, cpOff, cpOff + cpSize);
      o += cpSize;
    } else if (op !== 0) {
      if (p + op > delta.length || o + op > dstSize) throw new GitProtocolError('delta insert instruction out of bounds');
      delta.copy(out, o, p, p + op);
      p += op;
      o += op;
    } else {
      throw new GitProtocolError('delta uses reserved opcode 0');
    }
  }
  if (o !== dstSize) throw new GitProtocolError(`delta produced ${o} bytes, declared ${dstSize}`);
  return out;
}

interface InflateInfo {
  buffer: Buffer;
  engine: { bytesWritten: number };
}

export function readPackCommits(pack: Buffer, objectFormat: ObjectFormat, options: ReadPackOptions = {}): PackCommits {
  const algo = objectFormat === 'sha256' ? 'sha256' : 'sha1';
  const hashLen = objectFormat === 'sha256' ? 32 : 20;
  const hexLen = hashLen * 2;
  const maxObject = Math.min(options.maxObjectBytes ?? 512 * 1024 * 1024, bufferConstants.MAX_LENGTH);

  if (pack.length < 12 + hashLen) throw new GitProtocolError(`pack truncated: ${pack.length} bytes is less than a header and checksum`);
  if (pack.toString('latin1', 0, 4) !== 'PACK') throw new GitProtocolError(`not a pack: starts with ${JSON.stringify(pack.toString('latin1', 0, 4))}`);
  const version = pack.readUInt32BE(4);
  if (version !== 2 && version !== 3) throw new GitProtocolError(`unsupported pack version ${version}`);
  const count = pack.readUInt32BE(8);
  const end = pack.length - hashLen;
  // Every object takes at least a header byte and a minimal zlib stream (8 bytes).
  if (count > (end - 12) / 9) {
    throw new GitProtocolError(`pack truncated: header announces ${count} objects but only ${end - 12} bytes of object data follow`);
  }

  const result: PackCommits = {
    version,
    objectCount: count,
    commits: new Map(),
    unresolvedDeltas: 0,
    stored: { commit: 0, tree: 0, blob: 0, tag: 0, ofsDelta: 0, refDelta: 0 },
    resolved: { commit: 0, tree: 0, blob: 0, tag: 0 },
    checksum: pack.toString('hex', end),
  };
  const countResolved = (type: number) => {
    if (type === OBJ_COMMIT) result.resolved.commit++;
    else if (type === OBJ_TREE) result.resolved.tree++;
    else if (type === OBJ_BLOB) result.resolved.blob++;
    else result.resolved.tag++;
  };

  const inflate = (e: Entry, index: number): { data: Buffer; used: number } => {
    let r: InflateInfo;
    try {
      r = zlib.inflateSync(pack.subarray(e.dataStart, end), { info: true, maxOutputLength: Math.max(1, e.size) }) as unknown as InflateInfo;
    } catch (err) {
      const code = (err as { code?: string }).code;
      const why = code === 'ERR_BUFFER_TOO_LARGE' ? `inflates to more than its declared ${e.size} bytes` : `zlib: ${(err as Error).message}`;
      throw new GitProtocolError(`pack truncated or corrupt: object ${index + 1} of ${count} at offset ${e.offset} ${why}`);
    }
    if (r.buffer.length !== e.size) {
      throw new GitProtocolError(`pack corrupt: object ${index + 1} at offset ${e.offset} inflates to ${r.buffer.length} bytes, declared ${e.size}`);
    }
    return { data: r.buffer, used: r.engine.bytesWritten };
  };

  const entries: Entry[] = new Array(count);
  const indexByOffset = new Map<number, number>();
  let deltaCount = 0;
  let off = 12;
  const truncated = (i: number) =>
    new GitProtocolError(`pack truncated: object ${i + 1} of ${count} starts at offset ${off}, past the end of the data (${end})`);

  for (let i = 0; i < count; i++) {
    if (off >= end) throw truncated(i);
    const start = off;
    let c = pack[off++];
    const type = (c >> 4) & 7;
    let size = c & 15;
    let mult = 16;
    while (c & 0x80) {
      if (off >= end) throw truncated(i);
      c = pack[off++];
      size += (c & 0x7f) * mult;
      mult *= 128;
      if (mult > 2 ** 53) throw new GitProtocolError(`pack corrupt: object ${i + 1} at offset ${start} has an overlong size header`);
    }
    if (size > maxObject) throw new GitProtocolError(`object ${i + 1} at offset ${start} is ${size} bytes, over the ${maxObject}-byte limit`);
    const e: Entry = { offset: start, type, size, dataStart: 0, baseOffset: -1, baseId: null, id: null };
    if (type === OBJ_OFS_DELTA) {
      if (off >= end) throw truncated(i);
      c = pack[off++];
      let rel = c & 0x7f;
      while (c & 0x80) {
        if (off >= end) throw truncated(i);
        c = pack[off++];
        rel = (rel + 1) * 128 + (c & 0x7f);
        if (rel > start) break;
      }
      const base = start - rel;
      if (rel === 0 || base < 12 || !indexByOffset.has(base)) {
        throw new GitProtocolError(`pack corrupt: delta at offset ${start} has base offset -${rel} (offset ${base}), which is not the start of an earlier object`);
      }
      e.baseOffset = base;
      result.stored.ofsDelta++;
      deltaCount++;
    } else if (type === OBJ_REF_DELTA) {
      if (off + hashLen > end) throw truncated(i);
      e.baseId = pack.toString('hex', off, off + hashLen);
      off += hashLen;
      result.stored.refDelta++;
      deltaCount++;
    } else if (type >= OBJ_COMMIT && type <= OBJ_TAG) {
      result.stored[TYPE_NAMES[type] as 'commit' | 'tree' | 'blob' | 'tag']++;
    } else {
      throw new GitProtocolError(`pack corrupt: object ${i + 1} at offset ${start} has invalid type ${type}`);
    }
    e.dataStart = off;
    const { data, used } = inflate(e, i);
    off += used;
    if (e.type <= OBJ_TAG) {
      e.id = hashObject(algo, type, data);
      countResolved(type);
      if (type === OBJ_COMMIT) result.commits.set(e.id, commitParents(data, hexLen, e.id));
    }
    entries[i] = e;
    indexByOffset.set(start, i);
  }
  if (off !== end) throw new GitProtocolError(`pack corrupt: ${end - off} unexpected byte(s) between the last object and the checksum`);
  const sum = createHash(algo).update(pack.subarray(0, end)).digest();
  if (!sum.equals(pack.subarray(end))) {
    throw new GitProtocolError(`pack checksum mismatch: trailer ${result.checksum}, content hashes to ${sum.toString('hex')}`);
  }
  if (deltaCount === 0) return result;

  // Delta trees: each delta hangs under its base, by offset (OFS) or by id (REF).
  const ofsChildren = new Map<number, number[]>();
  const refChildren = new Map<string, number[]>();
  for (let i = 0; i < count; i++) {
    const e = entries[i];
    if (e.type === OBJ_OFS_DELTA) {
      const list = ofsChildren.get(e.baseOffset);
      if (list === undefined) ofsChildren.set(e.baseOffset, [i]);
      else list.push(i);
    } else if (e.type === OBJ_REF_DELTA) {
      const list = refChildren.get(e.baseId!);
      if (list === undefined) refChildren.set(e.baseId!, [i]);
      else list.push(i);
    }
  }
  const childrenOf = (e: Entry): number[] | undefined => {
    const byOffset = ofsChildren.get(e.offset);
    const byId = refChildren.get(e.id!);
    if (byId !== undefined) refChildren.delete(e.id!); // a duplicate of the same object must not resolve them twice
    if (byOffset === undefined) return byId;
    return byId === undefined ? byOffset : byOffset.concat(byId);
  };

  let resolvedDeltas = 0;
  interface Frame { type: number; content: Buffer; kids: number[]; next: number }
  for (let i = 0; i < count; i++) {
    const root = entries[i];
    if (root.type > OBJ_TAG) continue;
    const kids = childrenOf(root);
    if (kids === undefined) continue;
    const stack: Frame[] = [{ type: root.type, content: inflate(root, i).data, kids, next: 0 }];
    while (stack.length > 0) {
      const top = stack[stack.length - 1];
      if (top.next >= top.kids.length) {
        stack.pop();
        continue;
      }
      const ci = top.kids[top.next++];
      const child = entries[ci];
      let content: Buffer;
      try {
        content = applyDelta(top.content, inflate(child, ci).data, maxObject);
      } catch (err) {
        if (!(err instanceof GitProtocolError)) throw err;
        throw new GitProtocolError(`pack corrupt: delta at offset ${child.offset}: ${err.message}`);
      }
      child.id = hashObject(algo, top.type, content);
      resolvedDeltas++;
      countResolved(top.type);
      if (top.type === OBJ_COMMIT) result.commits.set(child.id, commitParents(content, hexLen, child.id));
      const grandKids = childrenOf(child);
      if (grandKids !== undefined) stack.push({ type: top.type, content, kids: grandKids, next: 0 });
    }
  }
  result.unresolvedDeltas = deltaCount - resolvedDeltas;
  return result;
}
