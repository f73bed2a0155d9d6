import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import zlib from 'node:zlib';
import { GitProtocolError } from '../../src/engines/git/pkt-line.ts';
import { applyDelta, readPackCommits } from '../../src/engines/git/pack.ts';
import type { ObjectFormat } from '../../src/engines/git/refs.ts';
import { Sandbox, tempDir } from './git-fixtures.ts';

const tmp = tempDir();
after(tmp.cleanup);
const sb = new Sandbox(tmp.dir);

interface VerifyLine { id: string; type: string; offset: number; depth: number; base: string | null }

/** git's own view of a pack: index it, then `git verify-pack -v`. */
function gitVerify(pack: Buffer, name: string, format: ObjectFormat = 'sha1'): VerifyLine[] {
  const file = sb.path(`${name}.pack`);
  writeFileSync(file, pack);
  sb.run(tmp.dir, ['index-pack', `--object-format=${format}`, file]);
  const out = sb.git(tmp.dir, 'verify-pack', `--object-format=${format}`, '-v', sb.path(`${name}.idx`));
  const lines: VerifyLine[] = [];
  for (const l of out.split('\n')) {
    const m = /^([0-9a-f]{40,64}) (\w+) +\d+ \d+ (\d+)(?: (\d+) ([0-9a-f]+))?$/.exec(l);
    if (m) lines.push({ id: m[1], type: m[2], offset: Number(m[3]), depth: m[4] ? Number(m[4]) : 0, base: m[5] ?? null });
  }
  return lines;
}

function withChecksum(body: Buffer, format: ObjectFormat = 'sha1'): Buffer {
  return Buffer.concat([body, createHash(format).update(body).digest()]);
}

function rehash(pack: Buffer): Buffer {
  return withChecksum(pack.subarray(0, pack.length - 20));
}

function isPackError(re: RegExp) {
  return (err: unknown) => err instanceof GitProtocolError && re.test(err.message);
}

// A history whose commits carry large, slightly different messages and a growing file, so that
// git pack-objects stores commits (and blobs) as deltas.
const deltaRepo = sb.initWork('deltas');
const deltaCommits: string[] = [];
{
  let text = '';
  for (let n = 0; n < 8; n++) {
    for (let i = 0; i < 40; i++) text += `version ${n} line ${i}: shared text that grows over time\n`;
    let msg = `Commit ${n}\n\n`;
    for (let i = 0; i < 120; i++) msg += `body line ${i} of a long commit message that barely changes\n`;
    msg += `final line ${n}\n`;
    deltaCommits.push(sb.commit(deltaRepo, { 'big.txt': text, [`f${n}`]: String(n) }, msg));
  }
  sb.git(deltaRepo, 'checkout', '-q', '-b', 'side', deltaCommits[3]);
  deltaCommits.push(sb.commit(deltaRepo, { side: 's' }, 'side branch'));
  sb.git(deltaRepo, 'checkout', '-q', 'main');
  sb.run(deltaRepo, ['merge', '-q', '--no-ff', '-m', 'merge side', 'side']);
  deltaCommits.push(sb.git(deltaRepo, 'rev-parse', 'HEAD'));
}
const fullOfs = sb.pack(deltaRepo, ['HEAD'], ['--delta-base-offset']);

test('a full pack: every commit with its parents, ids computed from content, checksum verified', () => {
  const r = readPackCommits(fullOfs, 'sha1');
  const expected = sb.parents(deltaRepo, 'HEAD');
  assert.deepEqual(new Map([...r.commits].sort()), new Map([...expected].sort()));
  assert.equal(r.objectCount, sb.git(deltaRepo, 'rev-list', '--objects', 'HEAD').split('\n').length);
  assert.equal(r.unresolvedDeltas, 0);
  assert.equal(r.resolved.commit, expected.size);
  assert.equal(r.version, 2);
  assert.equal(r.checksum, fullOfs.subarray(-20).toString('hex'));
  // the merge commit has two parents, in order
  assert.deepEqual(r.commits.get(deltaCommits.at(-1)!), [deltaCommits[7], deltaCommits[8]]);
});

test('the delta fixture really stores commits as OFS_DELTA (per git verify-pack) and they resolve', () => {
  const lines = gitVerify(fullOfs, 'full-ofs');
  const deltaCommitLines = lines.filter((l) => l.type === 'commit' && l.base !== null);
  assert.ok(deltaCommitLines.length >= 3, `expected commit deltas, got ${deltaCommitLines.length}`);
  assert.ok(lines.some((l) => l.depth >= 2), 'expected a delta chain of depth 2 or more');
  const r = readPackCommits(fullOfs, 'sha1');
  assert.ok(r.stored.ofsDelta >= deltaCommitLines.length);
  assert.equal(r.stored.refDelta, 0);
  for (const l of deltaCommitLines) assert.ok(r.commits.has(l.id), `delta commit ${l.id} resolved`);
  assert.equal(r.resolved.commit + r.resolved.tree + r.resolved.blob + r.resolved.tag, lines.length);
});

test('REF_DELTA packs (no ofs-delta) resolve the same commits', () => {
  const pack = sb.pack(deltaRepo, ['HEAD']);
  const r = readPackCommits(pack, 'sha1');
  assert.ok(r.stored.refDelta > 0);
  assert.equal(r.stored.ofsDelta, 0);
  assert.ok(gitVerify(pack, 'full-ref').some((l) => l.type === 'commit' && l.base !== null));
  assert.deepEqual(new Map([...r.commits].sort()), new Map([...sb.parents(deltaRepo, 'HEAD')].sort()));
});

test('an incremental push pack (new ^old) carries only the new commits', () => {
  const pack = sb.pack(deltaRepo, ['HEAD', `^${deltaCommits[5]}`], ['--delta-base-offset']);
  const r = readPackCommits(pack, 'sha1');
  assert.deepEqual(new Map([...r.commits].sort()), new Map([...sb.parents(deltaRepo, 'HEAD', `^${deltaCommits[5]}`)].sort()));
  assert.equal(r.commits.has(deltaCommits[5]), false);
});

test('a thin pack: deltas against objects outside the pack are counted, commits still found', () => {
  const pack = sb.pack(deltaRepo, [deltaCommits[7], `^${deltaCommits[6]}`], ['--thin', '--delta-base-offset']);
  const r = readPackCommits(pack, 'sha1');
  assert.ok(r.unresolvedDeltas > 0, 'big.txt should be sent as a delta against the previous version');
  assert.deepEqual([...r.commits], [[deltaCommits[7], [deltaCommits[6]]]]);
  // git agrees the pack is thin: indexing it without --fix-thin fails
  writeFileSync(sb.path('thin.pack'), pack);
  assert.notEqual(sb.run(tmp.dir, ['index-pack', sb.path('thin.pack')], { allowFail: true }).status, 0);
});

test('an empty pack (the pushed commit is already on the server)', () => {
  const pack = sb.pack(deltaRepo, ['HEAD', '^HEAD']);
  assert.equal(pack.length, 32);
  const r = readPackCommits(pack, 'sha1');
  assert.equal(r.objectCount, 0);
  assert.equal(r.commits.size, 0);
});

test('sha256 repositories: 64-digit ids and a SHA-256 trailer', () => {
  const w = sb.initWork('w256', 'sha256');
  sb.commit(w, { a: 'x'.repeat(5000) }, 'one');
  sb.commit(w, { a: 'x'.repeat(5000) + 'y' }, 'two');
  const pack = sb.pack(w, ['HEAD'], ['--delta-base-offset']);
  const r = readPackCommits(pack, 'sha256');
  assert.deepEqual(new Map([...r.commits].sort()), new Map([...sb.parents(w, 'HEAD')].sort()));
  for (const id of r.commits.keys()) assert.equal(id.length, 64);
  assert.throws(() => readPackCommits(pack, 'sha1'), GitProtocolError);
});

// ---- hand-built packs, checked against git index-pack ----

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

/** A delta that copies the common prefix of base and target, then inserts the rest. */
function makeDelta(base: Buffer, target: Buffer): Buffer {
  const out = [...varint(base.length), ...varint(target.length)];
  let prefix = 0;
  while (prefix < base.length && prefix < target.length && prefix < 0xffff && base[prefix] === target[prefix]) prefix++;
  if (prefix > 0) out.push(0x80 | 0x10 | 0x20, prefix & 255, prefix >> 8); // offset 0, two size bytes
  for (let p = prefix; p < target.length; p += 127) {
    const chunk = target.subarray(p, Math.min(p + 127, target.length));
    out.push(chunk.length, ...chunk);
  }
  return Buffer.from(out);
}

type PackEntry =
  | { kind: 'full'; type: string; data: Buffer }
  | { kind: 'ofs'; base: number; delta: Buffer }
  | { kind: 'ref'; baseId: string; delta: Buffer };

function buildPack(entries: PackEntry[], format: ObjectFormat = 'sha1'): { pack: Buffer; offsets: number[] } {
  const parts: Buffer[] = [Buffer.from('PACK'), Buffer.from([0, 0, 0, 2]), Buffer.alloc(4)];
  parts[2].writeUInt32BE(entries.length);
  let off = 12;
  const offsets: number[] = [];
  for (const e of entries) {
    offsets.push(off);
    let head: Buffer;
    let data: Buffer;
    if (e.kind === 'full') {
      head = typeSize(TYPES[e.type], e.data.length);
      data = e.data;
    } else if (e.kind === 'ofs') {
      head = Buffer.concat([typeSize(6, e.delta.length), ofsEncode(off - offsets[e.base])]);
      data = e.delta;
    } else {
      head = Buffer.concat([typeSize(7, e.delta.length), Buffer.from(e.baseId, 'hex')]);
      data = e.delta;
    }
    const z = zlib.deflateSync(data);
    parts.push(head, z);
    off += head.length + z.length;
  }
  return { pack: withChecksum(Buffer.concat(parts), format), offsets };
}

const catFile = (repo: string, id: string) => sb.run(repo, ['cat-file', 'commit', id]).stdout;

test('a chain of commit deltas (OFS and a forward REF_DELTA) resolves; git index-pack agrees', () => {
  const [c1, c2, c3, c4] = deltaCommits.slice(4, 8);
  const raw = [c1, c2, c3, c4].map((c) => catFile(deltaRepo, c));
  // c1 is a REF_DELTA against c2, which comes later and is itself a delta two deep
  const { pack } = buildPack([
    { kind: 'ref', baseId: c2, delta: makeDelta(raw[1], raw[0]) },
    { kind: 'full', type: 'commit', data: raw[3] },
    { kind: 'ofs', base: 1, delta: makeDelta(raw[3], raw[2]) },
    { kind: 'ofs', base: 2, delta: makeDelta(raw[2], raw[1]) },
  ]);
  const lines = gitVerify(pack, 'chain');
  assert.equal(Math.max(...lines.map((l) => l.depth)), 3);
  const r = readPackCommits(pack, 'sha1');
  assert.equal(r.unresolvedDeltas, 0);
  assert.deepEqual([...r.commits.keys()].sort(), [c1, c2, c3, c4].sort());
  for (const c of [c1, c2, c3, c4]) assert.deepEqual(r.commits.get(c), sb.parents(deltaRepo, '-1', c).get(c));
  assert.deepEqual(new Set(lines.map((l) => l.id)), new Set(r.commits.keys()));
});

test('applyDelta copies and inserts, and rejects deltas that do not fit their base', () => {
  const base = Buffer.from('hello, world');
  const target = Buffer.from('hello, there world!');
  assert.equal(applyDelta(base, makeDelta(base, target)).toString(), target.toString());
  assert.throws(() => applyDelta(Buffer.from('short'), makeDelta(base, target)), /delta expects a base of 12 bytes but the base has 5/);
  assert.throws(() => applyDelta(base, Buffer.from([12, 3, 0x91, 20, 3])), /copy instruction out of bounds/);
  assert.throws(() => applyDelta(base, Buffer.from([12, 3, 0])), /reserved opcode 0/);
  assert.throws(() => applyDelta(base, Buffer.from([12, 5, 2, 65, 66])), /produced 2 bytes, declared 5/);
  assert.throws(() => applyDelta(base, Buffer.from([12])), /truncated in its size header/);
});

// ---- malformed packs ----

test('truncated pack', () => {
  assert.throws(() => readPackCommits(fullOfs.subarray(0, fullOfs.length - 30), 'sha1'), isPackError(/pack truncated/));
  assert.throws(() => readPackCommits(fullOfs.subarray(0, 20), 'sha1'), isPackError(/pack truncated: 20 bytes/));
  // object count larger than what follows
  const more = Buffer.from(fullOfs);
  more.writeUInt32BE(more.readUInt32BE(8) + 1, 8);
  assert.throws(() => readPackCommits(rehash(more), 'sha1'), isPackError(/pack truncated: object \d+ of \d+ starts at offset/));
});

test('bad pack checksum', () => {
  const bad = Buffer.from(fullOfs);
  bad[bad.length - 1] ^= 0xff;
  assert.throws(() => readPackCommits(bad, 'sha1'), isPackError(/pack checksum mismatch: trailer [0-9a-f]{40}, content hashes to/));
});

test('corrupt object data and garbage', () => {
  const lines = gitVerify(fullOfs, 'corrupt-src');
  const blob = lines.find((l) => l.type === 'blob' && l.base === null)!;
  const bad = Buffer.from(fullOfs);
  for (let i = 4; i < 12; i++) bad[blob.offset + i] ^= 0x5a; // inside its zlib stream
  assert.throws(() => readPackCommits(rehash(bad), 'sha1'), isPackError(new RegExp(`pack (truncated or )?corrupt: object \\d+ (of \\d+ )?at offset ${blob.offset}`)));
  assert.throws(() => readPackCommits(Buffer.concat([Buffer.from('HTTP/1.1 200 OK\r\n\r\n'), Buffer.alloc(20)]), 'sha1'), isPackError(/not a pack: starts with "HTTP"/));
  const v9 = Buffer.from(fullOfs);
  v9.writeUInt32BE(9, 4);
  assert.throws(() => readPackCommits(rehash(v9), 'sha1'), isPackError(/unsupported pack version 9/));
  const fewer = Buffer.from(fullOfs);
  fewer.writeUInt32BE(fewer.readUInt32BE(8) - 1, 8);
  assert.throws(() => readPackCommits(rehash(fewer), 'sha1'), isPackError(/unexpected byte\(s\) between the last object and the checksum/));
  const { pack: type5 } = buildPack([{ kind: 'full', type: 'blob', data: Buffer.from('x') }]);
  type5[12] = (type5[12] & 0x8f) | (5 << 4);
  assert.throws(() => readPackCommits(rehash(type5), 'sha1'), isPackError(/invalid type 5/));
  const { pack: notCommit } = buildPack([{ kind: 'full', type: 'commit', data: Buffer.from('hello\n') }]);
  assert.throws(() => readPackCommits(notCommit, 'sha1'), isPackError(/malformed commit [0-9a-f]{40}: no "tree" line/));
});

test('delta with a bad base offset', () => {
  const lines = gitVerify(fullOfs, 'badofs-src');
  const starts = new Set(lines.map((l) => l.offset));
  const delta = lines.find((l) => l.type === 'commit' && l.base !== null)!;
  // skip the type/size varint, then rewrite the offset varint in place (same length) to a
  // distance that lands inside another object
  let p = delta.offset;
  while (fullOfs[p] & 0x80) p++;
  p++;
  let n = 1;
  while (fullOfs[p + n - 1] & 0x80) n++;
  let rel = n === 1 ? 1 : (2 ** (7 * (n - 1)) - 1) * 128 / 127 + 1;
  rel = Math.ceil(rel);
  while (starts.has(delta.offset - rel)) rel++;
  const enc = ofsEncode(rel);
  assert.equal(enc.length, n);
  const bad = Buffer.from(fullOfs);
  enc.copy(bad, p);
  assert.throws(
    () => readPackCommits(rehash(bad), 'sha1'),
    isPackError(new RegExp(`delta at offset ${delta.offset} has base offset -${rel} \\(offset ${delta.offset - rel}\\), which is not the start of an earlier object`)),
  );
  // a delta whose result does not fit its base
  const { pack } = buildPack([
    { kind: 'full', type: 'blob', data: Buffer.from('abc') },
    { kind: 'ofs', base: 0, delta: Buffer.from([9, 1, 1, 65]) },
  ]);
  assert.throws(() => readPackCommits(pack, 'sha1'), isPackError(/delta at offset \d+: delta expects a base of 9 bytes but the base has 3/));
});

test('deltas whose base is missing or circular stay unresolved instead of looping', () => {
  const a = Buffer.from('blob a content');
  const b = Buffer.from('blob b content');
  const idOf = (d: Buffer) => createHash('sha1').update(`blob ${d.length}\0`).update(d).digest('hex');
  const { pack } = buildPack([
    { kind: 'ref', baseId: idOf(b), delta: makeDelta(b, a) },
    { kind: 'ref', baseId: idOf(a), delta: makeDelta(a, b) },
    { kind: 'ref', baseId: 'f'.repeat(40), delta: makeDelta(a, b) },
  ]);
  const r = readPackCommits(pack, 'sha1');
  assert.equal(r.unresolvedDeltas, 3);
  assert.equal(r.objectCount, 3);
});
