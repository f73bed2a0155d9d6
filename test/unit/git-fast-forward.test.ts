import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import zlib from 'node:zlib';
import { readPackCommits } from '../../src/engines/git/pack.ts';
import { decideFastForward, buildUploadPackProbe, UploadPackResponseReader } from '../../src/engines/git/fast-forward.ts';
import { refUpdateKind, type RefUpdate } from '../../src/engines/git/receive-pack.ts';
import { readAllPktLines, encodePktLine, FLUSH_PKT, GitProtocolError } from '../../src/engines/git/pkt-line.ts';
import { encodeSideband } from '../../src/engines/git/sideband.ts';
import { zeroId, type ObjectFormat } from '../../src/engines/git/refs.ts';
import { matchesRefGlob, needsFastForwardCheck } from '../../src/engines/git/protected-refs.ts';
import { protectionDecision as checkProtection } from '../../src/policy/policy.ts';
import { Sandbox, askTargetFor, probeTarget, tempDir, type ProbeRun } from './git-fixtures.ts';

const tmp = tempDir();
after(tmp.cleanup);
const sb = new Sandbox(tmp.dir);

function update(ref: string, oldId: string, newId: string): RefUpdate {
  return { ref, oldId, newId, kind: refUpdateKind(oldId, newId) };
}

/** What a git client would send for `newId` given the server's refs: objects of newId not reachable from them. */
function pushedCommits(repo: string, newId: string, serverTips: string[], format: ObjectFormat = 'sha1'): Map<string, string[]> {
  return readPackCommits(sb.pack(repo, [newId, ...serverTips.map((t) => `^${t}`)], ['--delta-base-offset']), format).commits;
}

// History (server = bare clone of `work` taken after all these exist):
//   A ── B ── C                      main = B on the server; C only local
//   │    └── F1 ── F2                feature = F2 on the server (F1 is not a ref tip)
//   └── X                            other = X on the server
//   O                                orphan = O (unrelated root) on the server
const work = sb.initWork('work');
const A = sb.commit(work, { 'f.txt': 'A\n' }, 'A');
const B = sb.commit(work, { 'f.txt': 'B\n' }, 'B');
sb.git(work, 'checkout', '-q', '-b', 'feature');
const F1 = sb.commit(work, { 'g.txt': '1\n' }, 'F1');
const F2 = sb.commit(work, { 'g.txt': '2\n' }, 'F2');
sb.git(work, 'checkout', '-q', '-b', 'other', A);
const X = sb.commit(work, { 'x.txt': 'x\n' }, 'X');
sb.git(work, 'switch', '-q', '--orphan', 'orphan');
const O = sb.commit(work, { 'o.txt': 'o\n' }, 'O');
sb.git(work, 'checkout', '-q', 'main');
const server = sb.path('server.git');
sb.run(tmp.dir, ['clone', '-q', '--bare', work, server]);
const serverTips = [B, F2, X, O];
sb.git(work, 'checkout', '-q', 'main');
const C = sb.commit(work, { 'f.txt': 'C\n' }, 'C');

test('fast-forward proven from the pack alone', async () => {
  const pushed = pushedCommits(work, C, serverTips);
  assert.deepEqual([...pushed.keys()], [C]);
  const d = await decideFastForward(update('refs/heads/main', B, C), pushed);
  assert.deepEqual(d, { fastForward: true, method: 'pack', detail: `current tip ${B.slice(0, 12)} reached through 1 pushed commit(s)` });
});

test('a rewrite whose whole history is in the pack is non-fast-forward without asking anyone', async () => {
  // an unrelated history: all of it is new to the server
  sb.git(work, 'switch', '-q', '--orphan', 'rewrite');
  const R1 = sb.commit(work, { 'r.txt': '1\n' }, 'R1');
  const R2 = sb.commit(work, { 'r.txt': '2\n' }, 'R2');
  sb.git(work, 'checkout', '-q', 'main');
  const pushed = pushedCommits(work, R2, serverTips);
  assert.deepEqual(pushed.get(R2), [R1]);
  let asked = false;
  const d = await decideFastForward(update('refs/heads/main', B, R2), pushed, async () => ((asked = true), null));
  assert.equal(d.fastForward, false);
  assert.equal(d.method, 'pack');
  assert.match(d.detail, /^new commit's history does not contain the current tip/);
  assert.equal(asked, false);
});

test('an amended tip (parent on the server) is non-fast-forward: unproven without the target, disproven with it', async () => {
  sb.git(work, 'checkout', '-q', '-b', 'amend', B);
  sb.run(work, ['commit', '-q', '--amend', '-m', 'B amended']);
  const B2 = sb.git(work, 'rev-parse', 'HEAD');
  sb.git(work, 'checkout', '-q', 'main');
  const pushed = pushedCommits(work, B2, serverTips);
  assert.deepEqual([...pushed], [[B2, [A]]]);

  const alone = await decideFastForward(update('refs/heads/main', B, B2), pushed);
  assert.equal(alone.fastForward, false);
  assert.equal(alone.detail, `history could not be proven: commit ${A.slice(0, 12)} is not in the push and the target could not be asked`);

  // A is no ref tip, so a v0 upload-pack refuses to be asked about it...
  const log: ProbeRun[] = [];
  const v0 = await decideFastForward(update('refs/heads/main', B, B2), pushed, askTargetFor(server, {}, log));
  assert.equal(v0.fastForward, false);
  assert.equal(v0.method, 'target');
  assert.match(log[0].error ?? '', /not our ref/);
  // ...while v2 answers: A is an ancestor of B, so there is nothing new to send and B is never reached
  const v2log: ProbeRun[] = [];
  const v2 = await decideFastForward(update('refs/heads/main', B, B2), pushed, askTargetFor(server, { protocol: 2 }, v2log));
  assert.equal(v2.fastForward, false);
  assert.match(v2.detail, /^new commit's history does not contain the current tip/);
  assert.equal(v2log[0].commits?.size, 0);
});

test('merge whose first parent is already on the server and second parent is new', async () => {
  // M = merge(F2, Y) where Y is a new root: only the F2 side leads to main's tip B
  sb.git(work, 'switch', '-q', '--orphan', 'side');
  const Y = sb.commit(work, { 'y.txt': 'y\n' }, 'Y');
  sb.git(work, 'checkout', '-q', '-b', 'merge', F2);
  sb.run(work, ['merge', '-q', '--allow-unrelated-histories', '--no-ff', '-m', 'merge Y', 'side']);
  const M = sb.git(work, 'rev-parse', 'HEAD');
  sb.git(work, 'checkout', '-q', 'main');
  const pushed = pushedCommits(work, M, serverTips);
  assert.deepEqual(pushed.get(M), [F2, Y]);
  assert.equal(pushed.has(F2), false);

  const alone = await decideFastForward(update('refs/heads/main', B, M), pushed);
  assert.equal(alone.fastForward, false);
  assert.match(alone.detail, /commit [0-9a-f]{12} is not in the push and the target could not be asked/);

  const log: ProbeRun[] = [];
  const d = await decideFastForward(update('refs/heads/main', B, M), pushed, askTargetFor(server, {}, log));
  assert.equal(d.fastForward, true, d.detail);
  assert.equal(d.method, 'target');
  assert.match(d.detail, /reached through 2 pushed and 2 target commit\(s\)/);
  // the target sent F2 and F1 (F2's history minus what B already has)
  assert.deepEqual([...log[0].commits!.keys()].sort(), [F1, F2].sort());
});

test('merge with one parent already on the server and the other descending from the tip: pack alone suffices', async () => {
  sb.git(work, 'checkout', '-q', '-b', 'merge2', C);
  sb.run(work, ['merge', '-q', '--no-ff', '-m', 'merge other', 'other']);
  const M2 = sb.git(work, 'rev-parse', 'HEAD');
  sb.git(work, 'checkout', '-q', 'main');
  const pushed = pushedCommits(work, M2, serverTips);
  assert.deepEqual(pushed.get(M2), [C, X]);
  const d = await decideFastForward(update('refs/heads/main', B, M2), pushed);
  assert.equal(d.fastForward, true);
  assert.equal(d.method, 'pack');
});

test('pushing a commit the server already has (empty pack): needs the target', async () => {
  const pushed = pushedCommits(work, F2, serverTips);
  assert.equal(pushed.size, 0);
  const alone = await decideFastForward(update('refs/heads/main', B, F2), pushed);
  assert.equal(alone.fastForward, false);
  assert.equal(alone.detail, `history could not be proven: commit ${F2.slice(0, 12)} is not in the push and the target could not be asked`);

  const ff = await decideFastForward(update('refs/heads/main', B, F2), pushed, askTargetFor(server));
  assert.deepEqual([ff.fastForward, ff.method], [true, 'target']);

  // X is on the server too, but branches off before B
  const nonFf = await decideFastForward(update('refs/heads/main', B, X), new Map(), askTargetFor(server));
  assert.deepEqual([nonFf.fastForward, nonFf.method], [false, 'target']);
  assert.match(nonFf.detail, /^new commit's history does not contain the current tip \(checked 0 pushed and 1 target commit/);

  // O is an unrelated root
  const orphan = await decideFastForward(update('refs/heads/main', B, O), new Map(), askTargetFor(server));
  assert.equal(orphan.fastForward, false);
});

test('v0 probes may only name advertised tips; v2 and allowReachableSHA1InWant lift that', async () => {
  // main B → F1: F1 is on the server but is not a ref tip
  const u = update('refs/heads/main', B, F1);
  const v0: ProbeRun[] = [];
  const refused = await decideFastForward(u, new Map(), askTargetFor(server, {}, v0));
  assert.equal(refused.fastForward, false);
  assert.match(refused.detail, /the target could not answer/);
  assert.match(v0[0].error ?? '', /target refused the probe: upload-pack: not our ref [0-9a-f]{40}/);

  const v2 = await decideFastForward(u, new Map(), askTargetFor(server, { protocol: 2 }));
  assert.deepEqual([v2.fastForward, v2.method], [true, 'target']);

  const reachable = await decideFastForward(u, new Map(), askTargetFor(server, { config: ['uploadpack.allowReachableSHA1InWant=true'] }));
  assert.equal(reachable.fastForward, true);
});

test('probe with filter tree:0 (when the target allows filters) fetches commits only', async () => {
  const plain = await probeTarget(server, [F2], B);
  assert.ok(plain.stored!.tree > 0 && plain.stored!.blob > 0, 'without a filter, trees and blobs come too');
  for (const protocol of [0, 2] as const) {
    const r = await probeTarget(server, [F2], B, { protocol, filter: true, config: ['uploadpack.allowFilter=true'] });
    assert.equal(r.error, null);
    const { commit, tree, blob } = r.stored!;
    assert.deepEqual({ commit, tree, blob }, { commit: 2, tree: 0, blob: 0 });
    assert.deepEqual(r.commits!.get(F2), [F1]);
  }
});

test('sha256 repositories: pack walk and target probe', async () => {
  const w = sb.initWork('w256', 'sha256');
  const a = sb.commit(w, { f: 'a' }, 'a');
  const b = sb.commit(w, { f: 'b' }, 'b');
  const srv = sb.path('srv256.git');
  sb.run(tmp.dir, ['clone', '-q', '--bare', w, srv]);
  const c = sb.commit(w, { f: 'c' }, 'c');
  const pushed = pushedCommits(w, c, [b], 'sha256');
  assert.ok((await decideFastForward(update('refs/heads/main', b, c), pushed)).fastForward);
  sb.git(srv, 'branch', 'next', b);
  sb.git(srv, 'update-ref', 'refs/heads/main', a);
  for (const protocol of [0, 2] as const) {
    const d = await decideFastForward(update('refs/heads/main', a, b), new Map(), askTargetFor(srv, { protocol }));
    assert.deepEqual([d.fastForward, d.method], [true, 'target'], d.detail);
  }
});

test('creations and deletions', async () => {
  const z = zeroId('sha1');
  assert.deepEqual((await decideFastForward(update('refs/heads/new', z, C), new Map())).fastForward, true);
  assert.deepEqual((await decideFastForward(update('refs/heads/main', B, z), new Map())).fastForward, false);
  assert.equal(refUpdateKind(z, z), 'delete'); // an unchecked delete is still a delete
});

test('the decision rests on ids the gateway computes: a forged parent line changes the commit id', async () => {
  // Take B2-like content "parent A" → rewrite it to claim "parent B": its id is no longer the one pushed
  sb.git(work, 'checkout', '-q', '-b', 'forge', A);
  const Z2 = sb.commit(work, { 'z.txt': 'z\n' }, 'Z');
  sb.git(work, 'checkout', '-q', 'main');
  const raw = sb.run(work, ['cat-file', 'commit', Z2]).stdout.toString().replace(`parent ${A}`, `parent ${B}`);
  const content = Buffer.from(raw);
  const head = Buffer.from([0x90 | (content.length & 15), content.length >> 4]);
  const body = Buffer.concat([Buffer.from('PACK'), Buffer.from([0, 0, 0, 2, 0, 0, 0, 1]), head, zlib.deflateSync(content)]);
  const pack = Buffer.concat([body, createHash('sha1').update(body).digest()]);
  const pushed = readPackCommits(pack, 'sha1').commits;
  assert.equal(pushed.has(Z2), false);
  assert.deepEqual([...pushed.values()], [[B]]);
  const d = await decideFastForward(update('refs/heads/main', B, Z2), pushed);
  assert.equal(d.fastForward, false);
});

test('askTarget failures fail closed with the reason', async () => {
  const d = await decideFastForward(update('refs/heads/main', B, F2), new Map(), async () => {
    throw new Error('connection reset');
  });
  assert.deepEqual(d, {
    fastForward: false,
    method: 'target',
    detail: `history could not be proven: commit ${F2.slice(0, 12)} is not in the push and asking the target failed: connection reset`,
  });
});

test('buildUploadPackProbe: v0 and v2 request bytes', () => {
  const v0 = readAllPktLines(buildUploadPackProbe([F2, X, F2], B, 'sha1')).map((l) => (l.kind === 'data' ? l.payload.toString() : l.kind));
  assert.deepEqual(v0, [`want ${F2} side-band-64k ofs-delta no-progress agent=gatehouse\n`, `want ${X}\n`, 'flush', `have ${B}\n`, 'done\n']);
  assert.ok(!v0[0].includes('thin-pack'));
  const v2 = readAllPktLines(buildUploadPackProbe([F2], B, 'sha1', { protocol: 2, filter: true })).map((l) => (l.kind === 'data' ? l.payload.toString() : l.kind));
  assert.deepEqual(v2, ['command=fetch\n', 'agent=gatehouse\n', 'delim', 'no-progress\n', 'ofs-delta\n', `want ${F2}\n`, 'filter tree:0\n', `have ${B}\n`, 'done\n', 'flush']);
  assert.throws(() => buildUploadPackProbe([], B, 'sha1'));
  assert.throws(() => buildUploadPackProbe(['xyz'], B, 'sha1'));
});

test('UploadPackResponseReader: NAK/ACK, band-2 progress, band-3 and ERR', () => {
  const pack = sb.pack(work, [F2, `^${B}`]);
  const reply = Buffer.concat([encodePktLine(`ACK ${B}\n`), ...encodeSideband(2, Buffer.from('Enumerating\r')), ...encodeSideband(1, pack), FLUSH_PKT]);
  for (const step of [1, 3, reply.length]) {
    const r = new UploadPackResponseReader();
    for (let i = 0; i < reply.length; i += step) r.push(reply.subarray(i, i + step));
    assert.ok(r.done);
    assert.ok(r.pack!.equals(pack));
    assert.deepEqual(r.acks, [B]);
    assert.equal(r.progress, 'Enumerating\r');
  }
  const err = new UploadPackResponseReader();
  assert.throws(() => err.push(encodePktLine('ERR upload-pack: not our ref abc\n')), /target refused the probe: upload-pack: not our ref abc/);
  const fatal = new UploadPackResponseReader();
  assert.throws(() => fatal.push(Buffer.concat([encodePktLine('NAK\n'), ...encodeSideband(3, Buffer.from('fatal: disk\n'))])), (e: unknown) => e instanceof GitProtocolError && /target error: fatal: disk/.test(e.message));
  const small = new UploadPackResponseReader({ maxPackBytes: 10 });
  assert.throws(() => small.push(Buffer.concat([encodePktLine('NAK\n'), ...encodeSideband(1, pack)])), /exceeds 10 bytes/);
});

// ---- protected refs ----

test('ref globs: * within a component, ** across, bare names are branches', () => {
  const cases: Array<[string, string, boolean]> = [
    ['refs/heads/main', 'main', true],
    ['refs/heads/main', 'refs/heads/main', true],
    ['refs/heads/mainline', 'main', false],
    ['refs/tags/main', 'main', false],
    ['refs/heads/release/1.0', 'refs/heads/release/*', true],
    ['refs/heads/release/1.0/hotfix', 'refs/heads/release/*', false],
    ['refs/heads/release/1.0/hotfix', 'refs/heads/release/**', true],
    ['refs/heads/release/1.0', 'release/*', true],
    ['refs/heads/release-1.0', 'release-*', true],
    ['refs/heads/a/b/prod', 'refs/heads/**/prod', true],
    ['refs/heads/prod', 'refs/heads/**/prod', true],
    ['refs/heads/preprod', 'refs/heads/**/prod', false],
    ['refs/tags/v1.2.3', 'refs/tags/v*', true],
    ['refs/tags/v1x2', 'refs/tags/v1.2', false], // dots are literal
    ['refs/heads/anything/at/all', '**', true],
    ['refs/tags/x', '**', false],
  ];
  for (const [ref, glob, expected] of cases) assert.equal(matchesRefGlob(ref, glob), expected, `${ref} ~ ${glob}`);
});

test('protected refs (the @protected-refs rule of the policy stage): deletions and non-fast-forwards refused, creations and fast-forwards allowed', () => {
  const z = zeroId('sha1');
  const protect = ['main', 'refs/heads/release/*'];
  assert.deepEqual(checkProtection(update('refs/heads/main', B, z), protect), { allowed: false, reason: 'protected ref: deletion refused by gatehouse' });
  assert.deepEqual(checkProtection(update('refs/heads/main', B, C), protect, false), { allowed: false, reason: 'protected ref: non-fast-forward update refused by gatehouse' });
  assert.deepEqual(checkProtection(update('refs/heads/main', B, C), protect, true), { allowed: true });
  assert.equal(checkProtection(update('refs/heads/main', B, C), protect).allowed, false); // no decision: fail closed
  assert.deepEqual(checkProtection(update('refs/heads/release/2', z, C), protect), { allowed: true });
  assert.deepEqual(checkProtection(update('refs/heads/topic', B, z), protect), { allowed: true });
  assert.deepEqual(checkProtection(update('refs/heads/topic', B, C), protect, false), { allowed: true });
  assert.equal(needsFastForwardCheck(update('refs/heads/release/2', B, C), protect), true);
  assert.equal(needsFastForwardCheck(update('refs/heads/release/2', z, C), protect), false);
  assert.equal(needsFastForwardCheck(update('refs/heads/topic', B, C), protect), false);
});
