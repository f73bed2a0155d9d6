// The streaming pack inspector (src/engines/git/pack-stream.ts): the same commits as git itself
// sees, whatever the chunking, with deltas resolved from the cache or by reading the pack back;
// and hostile packs (truncated, lying headers, huge declared sizes, zlib garbage, bombs) refused
// with a message naming the problem.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import zlib from 'node:zlib';
import { GitProtocolError } from '../../src/engines/git/pkt-line.ts';
import { inspectPack, PackInspector } from '../../src/engines/git/pack-stream.ts';
import type { ObjectFormat } from '../../src/engines/git/refs.ts';
import { Sandbox, tempDir } from './git-fixtures.ts';

const tmp = tempDir();
after(tmp.cleanup);
const sb = new Sandbox(tmp.dir);

const sorted = (m: Map<string, string[]>) => new Map([...m].sort());

async function rejects(p: Promise<unknown>, re: RegExp): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof GitProtocolError, `a GitProtocolError, got ${String(err)}`);
    assert.match(err.message, re);
    return true;
  });
}

// Commits with long, similar messages and a growing file: git stores commits and blobs as deltas.
const repo = sb.initWork('deltas');
const commits: string[] = [];
{
  let text = '';
  for (let n = 0; n < 8; n++) {
    for (let i = 0; i < 40; i++) text += `version ${n} line ${i}: shared text that grows over time\n`;
    let msg = `Commit ${n}\n\n`;
    for (let i = 0; i < 120; i++) msg += `body line ${i} of a long commit message that barely changes\n`;
    commits.push(sb.commit(repo, { 'big.txt': text, [`f${n}`]: String(n) }, msg + `final line ${n}\n`));
  }
  sb.git(repo, 'checkout', '-q', '-b', 'side', commits[3]);
  commits.push(sb.commit(repo, { side: 's' }, 'side branch'));
  sb.git(repo, 'checkout', '-q', 'main');
  sb.run(repo, ['merge', '-q', '--no-ff', '-m', 'merge side', 'side']);
  commits.push(sb.git(repo, 'rev-parse', 'HEAD'));
}
const ofsPack = sb.pack(repo, ['HEAD'], ['--delta-base-offset']);
const refPack = sb.pack(repo, ['HEAD']);
const expected = sorted(sb.parents(repo, 'HEAD'));

test('every commit of an OFS_DELTA pack, whatever the chunking (1 byte to all at once)', async () => {
  for (const chunkBytes of [1, 7, 1000, 65536, ofsPack.length]) {
    const r = await inspectPack(ofsPack, 'sha1', { chunkBytes });
    assert.deepEqual(sorted(r.commits), expected, `chunks of ${chunkBytes}`);
    assert.equal(r.unresolvedDeltas, 0);
    assert.ok(r.stored.ofsDelta > 0 && r.stored.refDelta === 0);
    assert.equal(r.checksum, ofsPack.subarray(-20).toString('hex'));
    assert.equal(r.bytes, ofsPack.length);
  }
  assert.deepEqual((await inspectPack(ofsPack, 'sha1')).commits.get(commits.at(-1)!), [commits[7], commits[8]]);
});

test('REF_DELTA commits (no ofs-delta) resolve against commits in the pack', async () => {
  const r = await inspectPack(refPack, 'sha1', { chunkBytes: 4096 });
  assert.ok(r.stored.refDelta > 0);
  assert.deepEqual(sorted(r.commits), expected);
});

test('commit deltas whose base left the cache are resolved by reading the pack back', async () => {
  for (const pack of [ofsPack, refPack]) {
    const r = await inspectPack(pack, 'sha1', { cacheBytes: 0, chunkBytes: 999 });
    assert.deepEqual(sorted(r.commits), expected);
  }
  // Without a way to read back, those commits stay unknown and are counted (never guessed).
  const inspector = new PackInspector('sha1', { cacheBytes: 0 });
  await inspector.write(ofsPack);
  const r = await inspector.end();
  assert.ok(r.commits.size < expected.size && r.unresolvedDeltas > 0, `${r.commits.size} commits, ${r.unresolvedDeltas} unresolved`);
  for (const [id, parents] of r.commits) assert.deepEqual(parents, expected.get(id));
});

test('a thin pack: deltas against objects outside the pack stay unresolved, commits are found', async () => {
  const pack = sb.pack(repo, [commits[7], `^${commits[6]}`], ['--thin', '--delta-base-offset']);
  const r = await inspectPack(pack, 'sha1');
  assert.ok(r.unresolvedDeltas > 0);
  assert.deepEqual([...r.commits], [[commits[7], [commits[6]]]]);
});

test('sha256 repositories', async () => {
  const w = sb.initWork('w256', 'sha256');
  sb.commit(w, { a: 'x'.repeat(5000) }, 'one');
  sb.commit(w, { a: 'x'.repeat(5000) + 'y' }, 'two');
  const pack = sb.pack(w, ['HEAD'], ['--delta-base-offset']);
  const r = await inspectPack(pack, 'sha256', { chunkBytes: 100 });
  assert.deepEqual(sorted(r.commits), sorted(sb.parents(w, 'HEAD')));
  await rejects(inspectPack(pack, 'sha1'), /checksum|corrupt|malformed/);
});

test('large blobs are streamed through (not kept) and the commit after them is found', async () => {
  const w = sb.initWork('big');
  const c = sb.commit(w, { 'a.bin': randomBytes(3 * 1024 * 1024).toString('latin1'), 'b.txt': 'small' }, 'big blob');
  const pack = sb.pack(w, ['HEAD'], ['--delta-base-offset']);
  const r = await inspectPack(pack, 'sha1', { chunkBytes: 32 * 1024 });
  assert.deepEqual([...r.commits], [[c, []]]);
  assert.equal(r.stored.blob, 2);
});

test('an empty pack', async () => {
  const pack = sb.pack(repo, ['HEAD', '^HEAD']);
  const r = await inspectPack(pack, 'sha1');
  assert.equal(r.objectCount, 0);
  assert.equal(r.commits.size, 0);
});

// ---- hand-built packs ----

const TYPES: Record<string, number> = { commit: 1, tree: 2, blob: 3, tag: 4 };

function typeSize(type: number, size: number): Buffer {
  const out = [((size > 15 ? 0x80 : 0) | (type << 4) | (size & 15))];
  size = Math.floor(size / 16);
  while (size > 0) {
    out.push((size > 127 ? 0x80 : 0) | (size & 127));
    size = Math.floor(size / 128);
  }
  return Buffer.from(out);
}

function ofsEncode(rel: number): Buffer {
  const bytes = [rel & 127];
  while ((rel = Math.floor(rel / 128)) > 0) bytes.unshift(0x80 | (--rel & 127));
  return Buffer.from(bytes);
}

function varint(n: number): number[] {
  const out: number[] = [];
  do {
    out.push((n > 127 ? 0x80 : 0) | (n & 127));
    n = Math.floor(n / 128);
  } while (n > 0);
  return out;
}

function makeDelta(base: Buffer, target: Buffer): Buffer {
  const out = [...varint(base.length), ...varint(target.length)];
  let prefix = 0;
  while (prefix < base.length && prefix < target.length && prefix < 0xffff && base[prefix] === target[prefix]) prefix++;
  if (prefix > 0) out.push(0x80 | 0x10 | 0x20, prefix & 255, prefix >> 8);
  for (let p = prefix; p < target.length; p += 127) {
    const chunk = target.subarray(p, Math.min(p + 127, target.length));
    out.push(chunk.length, ...chunk);
  }
  return Buffer.from(out);
}

type Entry =
  | { kind: 'full'; type: string; data: Buffer; declared?: number; z?: Buffer }
  | { kind: 'ofs'; base: number; delta: Buffer; rel?: number }
  | { kind: 'ref'; baseId: string; delta: Buffer };

function withChecksum(body: Buffer, format: ObjectFormat = 'sha1'): Buffer {
  return Buffer.concat([body, createHash(format).update(body).digest()]);
}

function buildPack(entries: Entry[], count = entries.length): Buffer {
  const parts: Buffer[] = [Buffer.from('PACK'), Buffer.from([0, 0, 0, 2]), Buffer.alloc(4)];
  parts[2].writeUInt32BE(count);
  let off = 12;
  const offsets: number[] = [];
  for (const e of entries) {
    offsets.push(off);
    let head: Buffer;
    let z: Buffer;
    if (e.kind === 'full') {
      head = typeSize(TYPES[e.type], e.declared ?? e.data.length);
      z = e.z ?? zlib.deflateSync(e.data);
    } else if (e.kind === 'ofs') {
      head = Buffer.concat([typeSize(6, e.delta.length), ofsEncode(e.rel ?? off - offsets[e.base])]);
      z = zlib.deflateSync(e.delta);
    } else {
      head = Buffer.concat([typeSize(7, e.delta.length), Buffer.from(e.baseId, 'hex')]);
      z = zlib.deflateSync(e.delta);
    }
    parts.push(head, z);
    off += head.length + z.length;
  }
  return withChecksum(Buffer.concat(parts));
}

const catFile = (id: string) => Buffer.from(sb.run(repo, ['cat-file', 'commit', id]).stdout);

test('a chain of commit deltas with a forward REF_DELTA (base later in the pack) resolves', async () => {
  const [c1, c2, c3, c4] = commits.slice(4, 8);
  const raw = [c1, c2, c3, c4].map(catFile);
  const pack = buildPack([
    { kind: 'ref', baseId: c2, delta: makeDelta(raw[1], raw[0]) },
    { kind: 'full', type: 'commit', data: raw[3] },
    { kind: 'ofs', base: 1, delta: makeDelta(raw[3], raw[2]) },
    { kind: 'ofs', base: 2, delta: makeDelta(raw[2], raw[1]) },
    { kind: 'ofs', base: 0, delta: makeDelta(raw[0], raw[0]) }, // an OFS child of the forward REF_DELTA
  ]);
  for (const cacheBytes of [0, 1 << 20]) {
    const r = await inspectPack(pack, 'sha1', { chunkBytes: 50, cacheBytes });
    assert.equal(r.unresolvedDeltas, 0);
    assert.deepEqual([...r.commits.keys()].sort(), [c1, c2, c3, c4].sort());
    for (const c of [c1, c2, c3, c4]) assert.deepEqual(r.commits.get(c), sb.parents(repo, '-1', c).get(c));
  }
});

test('circular and missing REF_DELTA bases stay unresolved instead of looping', async () => {
  const a = Buffer.from('blob a content');
  const b = Buffer.from('blob b content');
  const idOf = (d: Buffer) => createHash('sha1').update(`blob ${d.length}\0`).update(d).digest('hex');
  const pack = buildPack([
    { kind: 'ref', baseId: idOf(b), delta: makeDelta(b, a) },
    { kind: 'ref', baseId: idOf(a), delta: makeDelta(a, b) },
    { kind: 'ref', baseId: 'f'.repeat(40), delta: makeDelta(a, b) },
    { kind: 'ofs', base: 2, delta: makeDelta(b, a) },
  ]);
  const r = await inspectPack(pack, 'sha1');
  assert.equal(r.unresolvedDeltas, 4);
  assert.equal(r.commits.size, 0);
});

test('a forged parent line gives the commit another id: it cannot stand in for the real one', async () => {
  const real = catFile(commits[5]);
  const forged = Buffer.from(real.toString('latin1').replace(/^parent [0-9a-f]{40}$/m, `parent ${commits[0]}`), 'latin1');
  const r = await inspectPack(buildPack([{ kind: 'full', type: 'commit', data: forged }]), 'sha1');
  assert.equal(r.commits.has(commits[5]), false);
  assert.deepEqual([...r.commits.values()], [[commits[0]]]);
});

// ---- hostile input ----

test('truncated packs: in the header, in an object, in the checksum', async () => {
  await rejects(inspectPack(ofsPack.subarray(0, 7), 'sha1'), /pack truncated: 7 bytes is less than a pack header/);
  await rejects(inspectPack(ofsPack.subarray(0, ofsPack.length - 400), 'sha1'), /pack truncated: it ended at offset \d+, in object \d+ of the \d+/);
  await rejects(inspectPack(ofsPack.subarray(0, ofsPack.length - 5), 'sha1'), /pack truncated: its checksum is 15 of 20 bytes/);
});

test('bad magic, version, checksum, type, base offset; trailing bytes', async () => {
  await rejects(inspectPack(Buffer.from('HTTP/1.1 200 OK\r\n\r\nxxxxxxxxxxxxxxxxxxxx'), 'sha1'), /not a pack: starts with "HTTP"/);
  const v9 = Buffer.from(ofsPack);
  v9.writeUInt32BE(9, 4);
  await rejects(inspectPack(v9, 'sha1'), /unsupported pack version 9/);
  const sum = Buffer.from(ofsPack);
  sum[sum.length - 1] ^= 0xff;
  await rejects(inspectPack(sum, 'sha1'), /pack checksum mismatch: trailer [0-9a-f]{40}, content hashes to/);
  const t5 = buildPack([{ kind: 'full', type: 'blob', data: Buffer.from('x') }]);
  t5[12] = (t5[12] & 0x8f) | (5 << 4);
  await rejects(inspectPack(t5, 'sha1'), /object 1 at offset 12 has invalid type 5/);
  const badOfs = buildPack([{ kind: 'full', type: 'blob', data: Buffer.from('abc') }, { kind: 'ofs', base: 0, rel: 5, delta: Buffer.from([3, 1, 1, 65]) }]);
  await rejects(inspectPack(badOfs, 'sha1'), /has base offset -5 \(offset \d+\), which is not the start of an earlier object/);
  const pastStart = buildPack([{ kind: 'ofs', base: 0, rel: 100, delta: Buffer.from([3, 1, 1, 65]) }]);
  await rejects(inspectPack(pastStart, 'sha1'), /delta at offset 12 has base offset -100/);
  await rejects(inspectPack(Buffer.concat([ofsPack, Buffer.from('more')]), 'sha1'), /4 unexpected byte\(s\) after the \d+ object\(s\) and the checksum/);
});

test('the object count lying, both ways, and a count over the limit', async () => {
  const more = Buffer.from(ofsPack);
  more.writeUInt32BE(more.readUInt32BE(8) + 1, 8);
  await rejects(inspectPack(withChecksum(more.subarray(0, -20)), 'sha1'), /pack truncated|corrupt/);
  const fewer = Buffer.from(ofsPack);
  fewer.writeUInt32BE(fewer.readUInt32BE(8) - 1, 8);
  await rejects(inspectPack(withChecksum(fewer.subarray(0, -20)), 'sha1'), /unexpected byte\(s\) after the \d+ object\(s\)/);
  const huge = Buffer.from(ofsPack);
  huge.writeUInt32BE(0xffffffff, 8);
  await rejects(inspectPack(huge, 'sha1'), /declares 4294967295 objects, more than the 10000000 the gateway inspects/);
  // A count within the limit but far beyond the data: an honest truncation error, no allocation by count.
  const lots = Buffer.from(ofsPack);
  lots.writeUInt32BE(9_000_000, 8);
  await rejects(inspectPack(withChecksum(lots.subarray(0, -20)), 'sha1'), /(pack truncated: it ended at offset \d+, in object \d+ of the 9000000|object \d+ of 9000000 at offset \d+: zlib)/);
});

test('huge declared sizes: a blob claiming 2^40 bytes, a commit over the inspection limit, an overlong header', async () => {
  await rejects(inspectPack(buildPack([{ kind: 'full', type: 'blob', data: Buffer.from('tiny'), declared: 2 ** 40 }]), 'sha1'),
    /object 1 of 1 at offset 12 inflates to 4 bytes, declared 1099511627776/);
  await rejects(inspectPack(buildPack([{ kind: 'full', type: 'commit', data: Buffer.from('tree x\n'), declared: 2 ** 40 }]), 'sha1'),
    /commit of 1099511627776 bytes at offset 12 is larger than the 16777216 bytes the gateway inspects/);
  const overlong = withChecksum(Buffer.concat([Buffer.from('PACK'), Buffer.from([0, 0, 0, 2, 0, 0, 0, 1]), Buffer.alloc(12, 0xff), Buffer.from([0])]));
  await rejects(inspectPack(overlong, 'sha1'), /overlong size header/);
});

test('zlib garbage and a decompression bomb inside an object', async () => {
  const garbage = buildPack([{ kind: 'full', type: 'blob', data: Buffer.alloc(10), z: Buffer.from('this is not a zlib stream at all') }]);
  await rejects(inspectPack(garbage, 'sha1'), /object 1 of 1 at offset 12: zlib: incorrect header check/);
  // 200 MB of zeros declared as 100 bytes: refused as soon as the output passes 100 bytes.
  const bomb = zlib.deflateSync(Buffer.alloc(200 * 1024 * 1024));
  const t0 = Date.now();
  await rejects(inspectPack(buildPack([{ kind: 'full', type: 'blob', data: Buffer.alloc(100), z: bomb }]), 'sha1', { chunkBytes: 16 * 1024 }),
    /object 1 of 1 at offset 12 inflates to more than its declared 100 bytes/);
  // A large declared size, bombing past it while streaming.
  await rejects(inspectPack(buildPack([{ kind: 'full', type: 'blob', data: Buffer.alloc(1 << 20), z: bomb }]), 'sha1', { chunkBytes: 16 * 1024 }),
    /inflates to more than its declared 1048576 bytes/);
  assert.ok(Date.now() - t0 < 5000, `bombs refused in ${Date.now() - t0} ms`);
});

test('a small object with a long stream of empty deflate blocks is streamed, not inflated in one step', async () => {
  // Empty stored blocks (BFINAL=0) for 1 MiB, then the data: valid zlib, tiny output, long input.
  const data = Buffer.from('hello');
  const raw = zlib.deflateRawSync(data);
  const emptyBlock = Buffer.from([0x00, 0x00, 0x00, 0xff, 0xff]);
  const blocks = Buffer.concat(Array.from({ length: 200_000 }, () => emptyBlock));
  const adler = Buffer.alloc(4);
  adler.writeUInt32BE(adler32(data));
  const z = Buffer.concat([Buffer.from([0x78, 0x01]), blocks, raw, adler]);
  assert.deepEqual(zlib.inflateSync(z), data);
  const r = await inspectPack(buildPack([{ kind: 'full', type: 'blob', data, z }]), 'sha1', { chunkBytes: 64 * 1024 });
  assert.equal(r.stored.blob, 1);
});

test('a failed inspector stays failed', async () => {
  const inspector = new PackInspector('sha1');
  await rejects(inspector.write(Buffer.from('GARBAGE-GARBAGE')), /not a pack/);
  await rejects(inspector.write(ofsPack), /not a pack/);
  await rejects(inspector.end(), /not a pack/);
});

function adler32(buf: Buffer): number {
  let a = 1;
  let b = 0;
  for (const c of buf) {
    a = (a + c) % 65521;
    b = (b + a) % 65521;
  }
  return ((b << 16) | a) >>> 0;
}
