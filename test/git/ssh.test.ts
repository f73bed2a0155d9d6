// Git over SSH through the gateway, with real git clients and a real OpenSSH + git target:
// clone/fetch/push relayed and recorded (git.command, git.fetch, git.push, git.probe,
// git.push.result), protected refs refusing rewrites and deletions before anything reaches the
// target, fast-forwards proven from the pack or by probing the target, all-or-nothing refusals,
// push options, ref globs, a large guarded push, and an identity without a grant.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startTestGateway, type TestGateway } from '../support/gateway.ts';
import { generateClientKey, startSshd, type ClientKey, type Sshd } from '../support/sshd.ts';
import { gitSshEnv, runSftp, runSsh } from '../support/ssh-client.ts';
import { createBareRepo, gitIn, makeCommit, type BareRepo } from '../support/git-servers.ts';
import type { RunResult } from '../support/processes.ts';
import {
  commitRandomFiles, describeEvents, eventsOf, failed, git, headOf, installPreReceiveLog, ok, oneEvent, packSizeFor, parentsOf,
  recordOne, refOf, seqOf, updateFor, updatesOf, ZERO_ID, type Data, type Recording,
} from './helpers.ts';

const CONN = 'repos';
/** Protects main too, but allows shells and other commands (--no-git-only): the client's command runs as sent. */
const OPEN = 'repos-open';
const REASON_NON_FF = 'protected ref: non-fast-forward update refused by gatehouse';
const REASON_DELETE = 'protected ref: deletion refused by gatehouse';
const REASON_NOT_APPLIED = 'not applied: another ref update in this push was refused by gatehouse';

let gw: TestGateway;
let sshd: Sshd;
let work: string;
let srv: string;
let alice: ClientKey;
let bob: ClientKey;
let aliceEnv: NodeJS.ProcessEnv;
let bobEnv: NodeJS.ProcessEnv;

before(async () => {
  [gw, sshd] = await Promise.all([startTestGateway(), startSshd()]);
  work = mkdtempSync(join(tmpdir(), 'gatehouse-git-ssh-test-'));
  srv = join(work, 'srv');
  [alice, bob] = await Promise.all([generateClientKey(work, 'ed25519', 'alice'), generateClientKey(work, 'ed25519', 'bob')]);
  aliceEnv = gitSshEnv({ identityFile: alice.privateKeyFile });
  bobEnv = gitSshEnv({ identityFile: bob.privateKeyFile });
  await gw.cliOk(['identity', 'add', 'alice', '--kind', 'human']);
  await gw.cliOk(['identity', 'add', 'bob', '--kind', 'human']);
  await gw.cliOk(['key', 'add', 'alice', `${alice.privateKeyFile}.pub`]);
  await gw.cliOk(['key', 'add', 'bob', `${bob.privateKeyFile}.pub`]);
  await gw.cliOk(['connection', 'add', CONN, '--type', 'ssh', '--host', sshd.host, '--port', String(sshd.port), '--user', sshd.user,
    '--key-file', sshd.clientKeyFile, '--host-key-fingerprint', sshd.hostKeyFingerprint,
    '--protect', 'refs/heads/main', '--protect', 'refs/heads/release/*']);
  await gw.cliOk(['grant', 'alice', CONN]);
  await gw.cliOk(['connection', 'add', OPEN, '--type', 'ssh', '--host', sshd.host, '--port', String(sshd.port), '--user', sshd.user,
    '--key-file', sshd.clientKeyFile, '--host-key-fingerprint', sshd.hostKeyFingerprint, '--protect', 'refs/heads/main', '--no-git-only']);
  await gw.cliOk(['grant', 'alice', OPEN]);
});

after(async () => {
  await gw?.stop();
  await sshd?.stop();
  if (work) rmSync(work, { recursive: true, force: true });
});

function url(repo: BareRepo, connection = CONN): string {
  return `ssh://${connection}@127.0.0.1:${gw.sshPort}${repo.path}`;
}

/** A work clone of `repo` made straight from its path (not recorded), whose origin is the gateway. */
async function workClone(repo: BareRepo, name: string): Promise<string> {
  const dir = join(work, name);
  await gitIn(work, ['clone', '-q', repo.path, dir]);
  await gitIn(dir, ['remote', 'set-url', 'origin', url(repo)]);
  return dir;
}

/** Pushes through the gateway as alice; returns the push's recording and git's result. */
function push(dir: string, args: string[], env = aliceEnv) {
  return recordOne(gw, () => git(dir, ['push', ...args], env));
}

/** The remote-rejected line git prints for `ref` (src -> dst, or just dst for a deletion). */
function rejectedLine(stderr: string, what: string): string | undefined {
  return stderr.split('\n').find((l) => l.startsWith(' ! [remote rejected] ') && l.includes(what));
}

function assertAllowedPush(d: Data): void {
  assert.equal(d.verdict, 'allowed', JSON.stringify(d));
  for (const u of updatesOf(d)) assert.equal(u.allowed, true, JSON.stringify(u));
}

function assertApplied(result: Data, refs: string[]): void {
  assert.equal(result.refusedByGateway, false, JSON.stringify(result));
  assert.equal(result.unpack, 'ok');
  assert.deepEqual(result.refs, refs.map((ref) => ({ ref, ok: true })));
  assert.deepEqual(result.exit, { code: 0, signal: null });
}

describe('git over ssh through the gateway', () => {
  it('clones with protocol v2 and v0, fetches and pushes, recording wants and a proven fast-forward', async () => {
    const repo = await createBareRepo(srv, 'basic', { initialCommits: 2 });
    const v2 = join(work, 'basic-v2');

    // Clone, protocol v2 (git's default; GIT_PROTOCOL passes through the gateway).
    const c2 = await recordOne(gw, () => git(work, ['clone', url(repo), v2], aliceEnv));
    ok(c2.result, 'clone (v2)');
    assert.equal(await headOf(v2), repo.head);
    const cmd = oneEvent(c2.rec, 'git.command');
    assert.equal(cmd.service, 'git-upload-pack');
    assert.equal(cmd.repo, repo.path);
    assert.equal(cmd.command, `git-upload-pack '${repo.path}'`);
    const f2 = oneEvent(c2.rec, 'git.fetch');
    assert.equal(f2.protocol, 2);
    assert.deepEqual(f2.commands, ['ls-refs', 'fetch']);
    // git asks once per ref it clones (HEAD and refs/heads/main), both the same commit.
    assert.deepEqual(f2.wants, [repo.head, repo.head]);
    assert.equal(f2.wantCount, 2);
    assert.ok((f2.refPrefixes as string[]).includes('refs/heads/'), JSON.stringify(f2.refPrefixes));
    assert.equal(f2.haves, 0);
    assert.ok((f2.bytesToClient as number) > 0);
    assert.deepEqual(f2.exit, { code: 0, signal: null });
    assert.ok(seqOf(c2.rec, 'git.command') < seqOf(c2.rec, 'git.fetch'), 'the command is recorded before the fetch summary');
    assert.equal(c2.rec.session.identity.name, 'alice');
    assert.equal(c2.rec.session.connection, CONN);

    // Clone, protocol v0.
    const v0 = join(work, 'basic-v0');
    const c0 = await recordOne(gw, () => git(work, ['-c', 'protocol.version=0', 'clone', url(repo), v0], aliceEnv));
    ok(c0.result, 'clone (v0)');
    assert.equal(await headOf(v0), repo.head);
    const f0 = oneEvent(c0.rec, 'git.fetch');
    assert.equal(f0.protocol, 0);
    assert.deepEqual(f0.wants, [repo.head, repo.head]);
    assert.equal(f0.done, true);
    assert.ok((f0.capabilities as string[]).some((c) => c.startsWith('agent=git/')), JSON.stringify(f0.capabilities));

    // Fetch a commit that reached the target some other way.
    const direct = join(work, 'basic-direct');
    await gitIn(work, ['clone', '-q', repo.path, direct]);
    const upstreamCommit = await makeCommit(direct, 'upstream.txt', 'from elsewhere\n', 'upstream change');
    await gitIn(direct, ['push', '-q', 'origin', 'main']);
    const fe = await recordOne(gw, () => git(v2, ['fetch', 'origin'], aliceEnv));
    ok(fe.result, 'fetch');
    assert.equal(await headOf(v2, 'origin/main'), upstreamCommit);
    const ff = oneEvent(fe.rec, 'git.fetch');
    assert.deepEqual(ff.wants, [upstreamCommit]);
    assert.ok((ff.haves as number) >= 1, `haves: ${String(ff.haves)}`);

    // Push a new commit to protected main: a fast-forward proven from the pushed pack.
    await gitIn(v2, ['merge', '-q', '--ff-only', 'origin/main']);
    const mine = await makeCommit(v2, 'mine.txt', 'pushed through the gateway\n', 'my change');
    const p = await push(v2, ['origin', 'main']);
    ok(p.result, 'push');
    assert.equal(await refOf(repo.path, 'refs/heads/main'), mine, 'the target has the pushed commit on main');
    assert.equal(await gitIn(repo.path, ['cat-file', '-p', `${mine}:mine.txt`]), 'pushed through the gateway');
    const pc = oneEvent(p.rec, 'git.command');
    assert.equal(pc.service, 'git-receive-pack');
    const gp = oneEvent(p.rec, 'git.push');
    assertAllowedPush(gp);
    assert.equal(gp.repo, repo.path);
    const u = updateFor(gp, 'refs/heads/main');
    assert.equal(u.old, upstreamCommit);
    assert.equal(u.new, mine);
    assert.equal(u.class, 'fast-forward');
    assert.match(u.evidence, /^pack: current tip [0-9a-f]{12} reached through 1 pushed commit\(s\)$/);
    assert.equal(u.protectedBy, 'refs/heads/main');
    assert.ok((gp.packBytes as number) > 0, 'a guarded push records the pack size it held');
    assert.ok((gp.capabilities as string[]).includes('report-status') || (gp.capabilities as string[]).includes('report-status-v2'));
    const res = oneEvent(p.rec, 'git.push.result');
    assertApplied(res, ['refs/heads/main']);
    assert.equal(updateFor(res, 'refs/heads/main').class, 'fast-forward');
    assert.equal(res.packBytes, gp.packBytes);
    assert.ok(seqOf(p.rec, 'git.command') < seqOf(p.rec, 'git.push') && seqOf(p.rec, 'git.push') < seqOf(p.rec, 'git.push.result'), describeEvents(p.rec));
    assert.equal(eventsOf(p.rec, 'git.probe').length, 0, 'the pack alone proved it: the target was not probed');
  });

  it('refuses a forced push to protected main; nothing reaches the target', async () => {
    const repo = await createBareRepo(srv, 'force', { initialCommits: 2 });
    const dir = await workClone(repo, 'force-work');
    const c3 = await makeCommit(dir, 'c3.txt', 'three\n', 'commit 3');
    ok((await push(dir, ['origin', 'main'])).result, 'first push');
    await gitIn(dir, ['commit', '-q', '--amend', '-m', 'commit 3, amended']);
    const amended = await headOf(dir);

    const { rec, result } = await push(dir, ['--force', 'origin', 'main']);
    failed(result, 'forced push');
    assert.ok(result.stderr.includes(` ! [remote rejected] main -> main (${REASON_NON_FF})`), result.stderr);
    assert.equal(await refOf(repo.path, 'refs/heads/main'), c3, 'main unchanged on the target');
    assert.equal((await git(repo.path, ['cat-file', '-e', amended])).code, 1, 'the amended commit never reached the target');

    const gp = oneEvent(rec, 'git.push');
    assert.equal(gp.verdict, 'refused');
    const u = updateFor(gp, 'refs/heads/main');
    assert.deepEqual({ old: u.old, new: u.new, class: u.class, allowed: u.allowed, reason: u.reason, protectedBy: u.protectedBy },
      { old: c3, new: amended, class: 'rewrite', allowed: false, reason: REASON_NON_FF, protectedBy: 'refs/heads/main' });
    assert.match(u.evidence, /^target: new commit's history does not contain the current tip \(checked 1 pushed and 0 target commit\(s\)\)$/);
    const probe = oneEvent(rec, 'git.probe');
    assert.deepEqual(probe.tips, [repo.head], 'the probe asked about the amended commit\'s parent');
    assert.equal(probe.have, c3);
    assert.equal(probe.answered, true);
    const res = oneEvent(rec, 'git.push.result');
    assert.equal(res.refusedByGateway, true);
    assert.deepEqual(res.refs, [{ ref: 'refs/heads/main', ok: false, reason: REASON_NON_FF }]);
    assert.ok((res.packBytes as number) > 0);

    // Control: the target itself would have taken this push.
    ok(await git(dir, ['push', '-q', '--force', repo.path, 'main']), 'direct forced push');
    assert.equal(await refOf(repo.path, 'refs/heads/main'), amended);
  });

  it('refuses deleting protected main; deletes and force-pushes unprotected branches', async () => {
    const repo = await createBareRepo(srv, 'delete', { initialCommits: 2 });
    const dir = await workClone(repo, 'delete-work');

    const del = await push(dir, ['origin', ':main']);
    failed(del.result, 'deleting main');
    assert.ok(del.result.stderr.includes(` ! [remote rejected] main (${REASON_DELETE})`), del.result.stderr);
    assert.equal(await refOf(repo.path, 'refs/heads/main'), repo.head);
    const gd = oneEvent(del.rec, 'git.push');
    assert.equal(gd.verdict, 'refused');
    assert.deepEqual(updatesOf(gd), [{ ref: 'refs/heads/main', old: repo.head, new: ZERO_ID, class: 'delete', evidence: 'delete',
      protectedBy: 'refs/heads/main', allowed: false, reason: REASON_DELETE,
      // --protect is a rule of the policy stage: the decision names it like any rule's.
      policy: { decision: 'deny', rule: '@protected-refs', version: 0, reason: REASON_DELETE } }]);
    const rd = oneEvent(del.rec, 'git.push.result');
    assert.equal(rd.refusedByGateway, true);
    assert.deepEqual(rd.refs, [{ ref: 'refs/heads/main', ok: false, reason: REASON_DELETE }]);

    // An unprotected branch: created, force-pushed, deleted.
    await gitIn(dir, ['checkout', '-q', '-b', 'topic']);
    const t1 = await makeCommit(dir, 't1.txt', 't1\n', 'topic 1');
    const t2 = await makeCommit(dir, 't2.txt', 't2\n', 'topic 2');
    const cr = await push(dir, ['origin', 'topic']);
    ok(cr.result, 'create topic');
    assert.equal(await refOf(repo.path, 'refs/heads/topic'), t2);
    const gc = oneEvent(cr.rec, 'git.push');
    assertAllowedPush(gc);
    assert.equal(updateFor(gc, 'refs/heads/topic').class, 'create');
    assert.equal(updateFor(gc, 'refs/heads/topic').protectedBy, undefined);

    await gitIn(dir, ['commit', '-q', '--amend', '-m', 'topic 2, amended']);
    const t2b = await headOf(dir);
    const fp = await push(dir, ['--force', 'origin', 'topic']);
    ok(fp.result, 'forced push to topic');
    assert.match(fp.result.stderr, /\+ [0-9a-f]+\.\.\.[0-9a-f]+ topic -> topic \(forced update\)/);
    assert.equal(await refOf(repo.path, 'refs/heads/topic'), t2b);
    const gf = oneEvent(fp.rec, 'git.push');
    assertAllowedPush(gf);
    // Unprotected updates are streamed without waiting for the pack, so the decision record says so...
    assert.deepEqual(updateFor(gf, 'refs/heads/topic'), { ref: 'refs/heads/topic', old: t2, new: t2b, class: 'unknown',
      evidence: 'pack not inspected before forwarding', allowed: true });
    assert.equal(gf.packBytes, undefined, 'nothing was held, so no pack size at decision time');
    // ...and the result classifies from the pack copy, without asking the target: the amended
    // commit's parent t1 is not in the push, so the rewrite cannot be proven (class unknown, not rewrite).
    const rf = oneEvent(fp.rec, 'git.push.result');
    assertApplied(rf, ['refs/heads/topic']);
    const uf = updateFor(rf, 'refs/heads/topic');
    assert.equal(uf.class, 'unknown');
    assert.equal(uf.evidence, `pack: history could not be proven: commit ${t1.slice(0, 12)} is not in the push and the target could not be asked`);
    assert.equal(eventsOf(fp.rec, 'git.probe').length, 0);

    const dt = await push(dir, ['origin', ':topic']);
    ok(dt.result, 'delete topic');
    assert.equal(await refOf(repo.path, 'refs/heads/topic'), null, 'topic deleted on the target');
    const gdt = oneEvent(dt.rec, 'git.push');
    assertAllowedPush(gdt);
    assert.deepEqual(updateFor(gdt, 'refs/heads/topic'), { ref: 'refs/heads/topic', old: t2b, new: ZERO_ID, class: 'delete', evidence: 'delete', allowed: true });
    assertApplied(oneEvent(dt.rec, 'git.push.result'), ['refs/heads/topic']);
  });

  it('proves a fast-forward to a commit the target already has by probing it; refuses moving main back', async () => {
    const repo = await createBareRepo(srv, 'probe', { initialCommits: 2 });
    const [c1, c2] = repo.commits;
    const dir = await workClone(repo, 'probe-work');
    await gitIn(dir, ['checkout', '-q', '-b', 'feature']);
    await makeCommit(dir, 'f1.txt', 'f1\n', 'feature 1');
    const f2 = await makeCommit(dir, 'f2.txt', 'f2\n', 'feature 2');
    ok((await push(dir, ['origin', 'feature'])).result, 'push feature');

    // main → feature's tip: every object is on the target already, so the pack is empty.
    const { rec, result } = await push(dir, ['origin', 'origin/feature:main']);
    ok(result, 'push origin/feature:main');
    assert.equal(await refOf(repo.path, 'refs/heads/main'), f2);
    const gp = oneEvent(rec, 'git.push');
    assertAllowedPush(gp);
    const u = updateFor(gp, 'refs/heads/main');
    assert.deepEqual({ old: u.old, new: u.new, class: u.class }, { old: c2, new: f2, class: 'fast-forward' });
    assert.match(u.evidence, /^target: /);
    assert.equal(u.evidence, `target: current tip ${c2.slice(0, 12)} reached through 0 pushed and 2 target commit(s)`);
    assert.equal(gp.packBytes, 32, 'an empty pack: 12-byte header and 20-byte checksum');
    const probe = oneEvent(rec, 'git.probe');
    assert.deepEqual(probe, { ch: probe.ch, repo: repo.path, tips: [f2], have: c2, answered: true, commits: 2 });
    assertApplied(oneEvent(rec, 'git.push.result'), ['refs/heads/main']);

    // The converse: main back to c1, which the target has (it is main's own history).
    const back = await push(dir, ['--force', 'origin', `${c1}:refs/heads/main`]);
    failed(back.result, 'moving main back');
    assert.ok(rejectedLine(back.result.stderr, `-> main (${REASON_NON_FF})`), back.result.stderr);
    assert.equal(await refOf(repo.path, 'refs/heads/main'), f2, 'main unchanged');
    const gb = oneEvent(back.rec, 'git.push');
    assert.equal(gb.verdict, 'refused');
    const ub = updateFor(gb, 'refs/heads/main');
    assert.deepEqual({ old: ub.old, new: ub.new, class: ub.class, allowed: ub.allowed, reason: ub.reason },
      { old: f2, new: c1, class: 'rewrite', allowed: false, reason: REASON_NON_FF });
    assert.equal(ub.evidence, 'target: new commit\'s history does not contain the current tip (checked 0 pushed and 0 target commit(s))');
    assert.deepEqual(oneEvent(back.rec, 'git.probe').tips, [c1]);
    assert.equal(oneEvent(back.rec, 'git.push.result').refusedByGateway, true);
  });

  it('allows a merge whose only path to main runs through a second parent the target already has', async () => {
    const repo = await createBareRepo(srv, 'merge', { initialCommits: 2 });
    const [c1, c2] = repo.commits;
    const dir = await workClone(repo, 'merge-work');
    await gitIn(dir, ['checkout', '-q', '-b', 'feature']);
    const f = await makeCommit(dir, 'feature.txt', 'feature\n', 'feature');
    ok((await push(dir, ['origin', 'feature'])).result, 'push feature');
    // side starts at c1 (main~1), so the first parent line does not contain main's tip c2.
    await gitIn(dir, ['checkout', '-q', '-b', 'side', c1]);
    const z = await makeCommit(dir, 'side.txt', 'side\n', 'side');
    await gitIn(dir, ['merge', '-q', '--no-ff', '-m', 'merge feature into side', 'feature']);
    const x = await headOf(dir);
    assert.deepEqual(await parentsOf(dir, x), [z, f]);

    const { rec, result } = await push(dir, ['origin', 'side:main']);
    ok(result, 'push the merge to main');
    assert.equal(await refOf(repo.path, 'refs/heads/main'), x);
    assert.deepEqual(await parentsOf(repo.path, x), [z, f]);
    const gp = oneEvent(rec, 'git.push');
    assertAllowedPush(gp);
    const u = updateFor(gp, 'refs/heads/main');
    assert.equal(u.class, 'fast-forward');
    assert.equal(u.evidence, `target: current tip ${c2.slice(0, 12)} reached through 2 pushed and 1 target commit(s)`);
    const probe = oneEvent(rec, 'git.probe');
    assert.deepEqual([...(probe.tips as string[])].sort(), [f, c1].sort());
    assert.equal(probe.have, c2);
    assertApplied(oneEvent(rec, 'git.push.result'), ['refs/heads/main']);
  });

  it('refuses a mixed push as a whole: the allowed ref is not applied either (plain and --atomic)', async () => {
    const repo = await createBareRepo(srv, 'mixed', { initialCommits: 2 });
    const dir = await workClone(repo, 'mixed-work');
    await gitIn(dir, ['branch', 'newbranch']);
    await gitIn(dir, ['commit', '-q', '--amend', '-m', 'rewritten main']);
    const rewritten = await headOf(dir);

    for (const atomic of [false, true]) {
      const { rec, result } = await push(dir, [...(atomic ? ['--atomic'] : []), '--force', 'origin', 'newbranch', 'main']);
      failed(result, `mixed push (atomic: ${atomic})`);
      assert.ok(result.stderr.includes(` ! [remote rejected] main -> main (${REASON_NON_FF})`), result.stderr);
      assert.ok(result.stderr.includes(` ! [remote rejected] newbranch -> newbranch (${REASON_NOT_APPLIED})`), result.stderr);
      assert.equal(await refOf(repo.path, 'refs/heads/main'), repo.head, 'main unchanged');
      assert.equal(await refOf(repo.path, 'refs/heads/newbranch'), null, 'newbranch not created');
      const gp = oneEvent(rec, 'git.push');
      assert.equal(gp.verdict, 'refused');
      assert.equal((gp.capabilities as string[]).includes('atomic'), atomic, JSON.stringify(gp.capabilities));
      const nb = updateFor(gp, 'refs/heads/newbranch');
      assert.deepEqual({ class: nb.class, allowed: nb.allowed, reason: nb.reason, protectedBy: nb.protectedBy },
        { class: 'create', allowed: false, reason: REASON_NOT_APPLIED, protectedBy: undefined });
      const m = updateFor(gp, 'refs/heads/main');
      assert.deepEqual({ new: m.new, class: m.class, allowed: m.allowed, reason: m.reason }, { new: rewritten, class: 'rewrite', allowed: false, reason: REASON_NON_FF });
      const res = oneEvent(rec, 'git.push.result');
      assert.equal(res.refusedByGateway, true);
      const refs = [...(res.refs as Array<{ ref: string }>)].sort((a, b) => a.ref.localeCompare(b.ref));
      assert.deepEqual(refs, [
        { ref: 'refs/heads/main', ok: false, reason: REASON_NON_FF },
        { ref: 'refs/heads/newbranch', ok: false, reason: REASON_NOT_APPLIED },
      ]);
    }
  });

  it('refuses deleting protected main in a push that also sends a pack, with a report (not a hang-up)', async () => {
    // Deleting main needs no pack check, so the refusal is decided before the pack of the other
    // command has arrived; the client must still get its report once it has sent that pack.
    const repo = await createBareRepo(srv, 'delete-mixed', { initialCommits: 2 });
    const dir = await workClone(repo, 'delete-mixed-work');
    await gitIn(dir, ['checkout', '-q', '-b', 'extra']);
    // A few MB, so that the client is still sending when the target's receive-pack (given EOF) has gone.
    const e = await commitRandomFiles(dir, 'extra', 1, 4 * 1024 * 1024, 'extra');

    const { rec, result } = await push(dir, ['origin', 'extra', ':main']);
    assert.equal(result.code, 1, `git push exits 1 after a rejected ref\nstderr: ${result.stderr}`);
    assert.ok(result.stderr.includes(` ! [remote rejected] main (${REASON_DELETE})`), result.stderr);
    assert.ok(result.stderr.includes(` ! [remote rejected] extra -> extra (${REASON_NOT_APPLIED})`), result.stderr);
    assert.doesNotMatch(result.stderr, /hung up|unexpected disconnect/);
    assert.equal(await refOf(repo.path, 'refs/heads/main'), repo.head);
    assert.equal(await refOf(repo.path, 'refs/heads/extra'), null);
    const gp = oneEvent(rec, 'git.push');
    assert.equal(gp.verdict, 'refused');
    assert.equal(updateFor(gp, 'refs/heads/extra').new, e);
    const res = oneEvent(rec, 'git.push.result');
    assert.equal(res.refusedByGateway, true);
    assert.ok((res.packBytes as number) > 4 * 1024 * 1024, `the pack was drained and counted: ${String(res.packBytes)}`);
  });

  it('ends a refused push like git-receive-pack does: ssh exits 0 (exit-status sent)', async () => {
    const repo = await createBareRepo(srv, 'exit-status', { initialCommits: 2 });
    const dir = await workClone(repo, 'exit-status-work');
    // An ssh wrapper (named ssh, so git treats it as OpenSSH) that notes ssh's own exit status.
    const bin = join(work, 'ssh-wrapper');
    mkdirSync(bin, { recursive: true });
    const statusFile = join(bin, 'status');
    writeFileSync(join(bin, 'ssh'), `#!/bin/sh\n${aliceEnv.GIT_SSH_COMMAND} "$@"\nrc=$?\necho $rc >> '${statusFile}'\nexit $rc\n`, { mode: 0o755 });
    const env = { GIT_SSH_COMMAND: join(bin, 'ssh') };
    const statuses = (): string[] => readFileSync(statusFile, 'utf8').trim().split('\n');

    await makeCommit(dir, 'ok.txt', 'ok\n', 'allowed');
    ok((await push(dir, ['origin', 'main'], env)).result, 'allowed push');
    assert.deepEqual(statuses(), ['0'], 'control: an allowed push ends with exit status 0');

    // Refused by the target itself (pre-receive hook): receive-pack reports ng and exits 0.
    writeFileSync(join(repo.path, 'hooks', 'pre-receive'), '#!/bin/sh\necho "hook says no" >&2\nexit 1\n', { mode: 0o755 });
    await makeCommit(dir, 'no.txt', 'no\n', 'declined by the hook');
    const declined = await push(dir, ['origin', 'main'], env);
    failed(declined.result, 'push declined by the hook');
    assert.match(declined.result.stderr, /remote: hook says no/);
    assert.ok(declined.result.stderr.includes(' ! [remote rejected] main -> main (pre-receive hook declined)'), declined.result.stderr);
    const dr = oneEvent(declined.rec, 'git.push.result');
    assert.equal(dr.refusedByGateway, false);
    assert.equal(dr.unpack, 'ok');
    assert.deepEqual(dr.refs, [{ ref: 'refs/heads/main', ok: false, reason: 'pre-receive hook declined' }]);
    assert.deepEqual(statuses(), ['0', '0'], 'a push the target refused ends with exit status 0');
    rmSync(join(repo.path, 'hooks', 'pre-receive'));

    // Refused by the gateway: it answers in receive-pack's place, so it should end the same way.
    await gitIn(dir, ['reset', '-q', '--hard', 'HEAD~2']);
    await makeCommit(dir, 'rewrite.txt', 'rewrite\n', 'rewrite');
    const refused = await push(dir, ['--force', 'origin', 'main'], env);
    failed(refused.result, 'forced push');
    assert.ok(refused.result.stderr.includes(` ! [remote rejected] main -> main (${REASON_NON_FF})`), refused.result.stderr);
    assert.deepEqual(statuses(), ['0', '0', '0'], 'a push the gateway refused ends with exit status 0 (255 means no exit-status was sent)');
  });

  it('records push options and hands them to the target, guarded and streamed', async () => {
    const repo = await createBareRepo(srv, 'options', { initialCommits: 1 });
    await gitIn(repo.path, ['config', 'receive.advertisePushOptions', 'true']);
    const log = join(work, 'options-hook.log');
    installPreReceiveLog(repo.path, log);
    const dir = await workClone(repo, 'options-work');
    const c = await makeCommit(dir, 'o.txt', 'o\n', 'with options');

    // Protected main: the push is held and checked, then forwarded with its options.
    const g = await push(dir, ['-o', 'ci.skip', '-o', 'note=hello world', 'origin', 'main']);
    ok(g.result, 'push with options to main');
    assert.equal(await refOf(repo.path, 'refs/heads/main'), c);
    const gp = oneEvent(g.rec, 'git.push');
    assertAllowedPush(gp);
    assert.deepEqual(gp.pushOptions, ['ci.skip', 'note=hello world']);
    assert.ok((gp.capabilities as string[]).includes('push-options'), JSON.stringify(gp.capabilities));
    assertApplied(oneEvent(g.rec, 'git.push.result'), ['refs/heads/main']);

    // Unprotected branch: streamed straight through, options recorded all the same.
    await gitIn(dir, ['checkout', '-q', '-b', 'ci']);
    const d = await makeCommit(dir, 'ci.txt', 'ci\n', 'ci branch');
    const s = await push(dir, ['--push-option=deploy=staging', 'origin', 'ci']);
    ok(s.result, 'push with an option to ci');
    assert.equal(await refOf(repo.path, 'refs/heads/ci'), d);
    assert.deepEqual(oneEvent(s.rec, 'git.push').pushOptions, ['deploy=staging']);

    assert.equal(readFileSync(log, 'utf8'), [
      'push options: 2', 'option: ci.skip', 'option: note=hello world', `update: refs/heads/main ${repo.head} ${c}`,
      'push options: 1', 'option: deploy=staging', `update: refs/heads/ci ${ZERO_ID} ${d}`, '',
    ].join('\n'));
  });

  it('protects refs/heads/release/*: a forced push to release/1.0 is refused, release/2.0 may be created', async () => {
    const repo = await createBareRepo(srv, 'release', { initialCommits: 1 });
    const dir = await workClone(repo, 'release-work');
    await gitIn(dir, ['checkout', '-q', '-b', 'release/1.0']);
    const r1 = await makeCommit(dir, 'r1.txt', 'r1\n', 'release 1.0');
    await gitIn(dir, ['push', '-q', repo.path, 'release/1.0']); // set up directly, not through the gateway
    await gitIn(dir, ['fetch', '-q', repo.path, '+refs/heads/*:refs/remotes/origin/*']);

    await gitIn(dir, ['commit', '-q', '--amend', '-m', 'release 1.0, rewritten']);
    const forced = await push(dir, ['--force', 'origin', 'release/1.0']);
    failed(forced.result, 'forced push to release/1.0');
    assert.ok(forced.result.stderr.includes(` ! [remote rejected] release/1.0 -> release/1.0 (${REASON_NON_FF})`), forced.result.stderr);
    assert.equal(await refOf(repo.path, 'refs/heads/release/1.0'), r1);
    const uf = updateFor(oneEvent(forced.rec, 'git.push'), 'refs/heads/release/1.0');
    assert.deepEqual({ class: uf.class, protectedBy: uf.protectedBy, allowed: uf.allowed }, { class: 'rewrite', protectedBy: 'refs/heads/release/*', allowed: false });

    await gitIn(dir, ['checkout', '-q', '-b', 'release/2.0']);
    const r2 = await makeCommit(dir, 'r2.txt', 'r2\n', 'release 2.0');
    const created = await push(dir, ['origin', 'release/2.0']);
    ok(created.result, 'create release/2.0');
    assert.equal(await refOf(repo.path, 'refs/heads/release/2.0'), r2);
    const gc = oneEvent(created.rec, 'git.push');
    assertAllowedPush(gc);
    const uc = updateFor(gc, 'refs/heads/release/2.0');
    assert.deepEqual({ class: uc.class, evidence: uc.evidence, protectedBy: uc.protectedBy }, { class: 'create', evidence: 'create', protectedBy: 'refs/heads/release/*' });

    // Once created, it is protected like the rest: no deletion.
    const del = await push(dir, ['origin', ':release/2.0']);
    failed(del.result, 'deleting release/2.0');
    assert.ok(del.result.stderr.includes(` ! [remote rejected] release/2.0 (${REASON_DELETE})`), del.result.stderr);
    assert.equal(await refOf(repo.path, 'refs/heads/release/2.0'), r2);

    // A name outside the glob (another path component) is not protected.
    await gitIn(dir, ['push', '-q', repo.path, 'release/2.0:refs/heads/releases/2.0']);
    await gitIn(dir, ['commit', '-q', '--amend', '-m', 'release 2.0, rewritten']);
    const other = await push(dir, ['--force', 'origin', 'HEAD:refs/heads/releases/2.0']);
    ok(other.result, 'forced push to releases/2.0');
    assert.equal(await refOf(repo.path, 'refs/heads/releases/2.0'), await headOf(dir));
    assert.equal(updateFor(oneEvent(other.rec, 'git.push'), 'refs/heads/releases/2.0').protectedBy, undefined);
  });

  it('passes a 20 MB fast-forward to protected main and records its pack size', async () => {
    const repo = await createBareRepo(srv, 'large', { initialCommits: 1 });
    const dir = await workClone(repo, 'large-work');
    const big = await commitRandomFiles(dir, 'data', 4, 5 * 1024 * 1024, '20 MB of random data');
    const expected = await packSizeFor(dir, [big, `^${repo.head}`]);
    assert.ok(expected > 20 * 1024 * 1024, `reference pack of ${expected} bytes`);

    const t0 = Date.now();
    const { rec, result } = await push(dir, ['origin', 'main']);
    ok(result, 'large push');
    const ms = Date.now() - t0;
    assert.equal(await refOf(repo.path, 'refs/heads/main'), big);
    assert.equal(await gitIn(repo.path, ['cat-file', '-s', `${big}:data/blob-3.bin`]), String(5 * 1024 * 1024));
    const gp = oneEvent(rec, 'git.push');
    assertAllowedPush(gp);
    assert.equal(updateFor(gp, 'refs/heads/main').class, 'fast-forward');
    const held = gp.packBytes as number;
    assert.ok(Math.abs(held - expected) <= expected * 0.001 + 1024, `recorded ${held} bytes, a pack of the same objects is ${expected}`);
    const res = oneEvent(rec, 'git.push.result');
    assertApplied(res, ['refs/heads/main']);
    assert.equal(res.packBytes, held);
    assert.ok(ms < 30_000, `large push took ${ms} ms`);
  });

  it('refuses an identity without a grant with a gatehouse message; nothing is pushed', async () => {
    const repo = await createBareRepo(srv, 'nogrant', { initialCommits: 1 });
    const dir = await workClone(repo, 'nogrant-work');
    await makeCommit(dir, 'bob.txt', 'bob\n', 'bob was here');

    const { rec, result } = await push(dir, ['origin', 'main'], bobEnv);
    failed(result, 'push without a grant');
    assert.match(result.stderr, /gatehouse: identity "bob" has no grant on connection "repos"/);
    assert.match(result.stderr, /fatal: Could not read from remote repository/);
    assert.equal(await refOf(repo.path, 'refs/heads/main'), repo.head, 'nothing pushed');
    assert.equal(rec.session.identity.name, 'bob');
    assert.match(String(rec.session.endReason), /^refused: identity "bob" has no grant on connection "repos"/);
    assert.equal(eventsOf(rec, 'git.command').length, 0, describeEvents(rec));
    assert.equal(eventsOf(rec, 'git.push').length, 0);

    const clone = await recordOne(gw, () => git(work, ['clone', url(repo), join(work, 'nogrant-clone')], bobEnv));
    failed(clone.result, 'clone without a grant');
    assert.match(clone.result.stderr, /gatehouse: identity "bob" has no grant/);
  });

  // ── Spellings of the Git services, and Git-only connections (issue-11 item 3) ───────────────

  /** A work clone with a branch `evil` that rewrites main (forks from main~1). */
  async function rewriteSetup(name: string) {
    const repo = await createBareRepo(srv, name, { initialCommits: 2 });
    const dir = await workClone(repo, `${name}-work`);
    await gitIn(dir, ['checkout', '-q', '-b', 'evil', 'HEAD~1']);
    const evil = await makeCommit(dir, 'evil.txt', 'evil\n', 'rewrite main');
    return { repo, dir, evil };
  }

  function assertRefusedRewrite(r: { rec: Recording; result: RunResult }, repo: BareRepo, what: string): Data {
    failed(r.result, what);
    assert.ok(rejectedLine(r.result.stderr, 'evil -> main')?.includes(REASON_NON_FF), `${what}: ${r.result.stderr}`);
    const cmd = oneEvent(r.rec, 'git.command');
    assert.deepEqual({ service: cmd.service, repo: cmd.repo }, { service: 'git-receive-pack', repo: repo.path }, what);
    const p = oneEvent(r.rec, 'git.push');
    assert.equal(p.verdict, 'refused', what);
    assert.deepEqual({ class: updateFor(p, 'refs/heads/main').class, allowed: updateFor(p, 'refs/heads/main').allowed }, { class: 'rewrite', allowed: false });
    return cmd;
  }

  it('refuses a forced push to protected main however receive-pack is spelled (path, env, git -c, sh -c), on a connection that allows shells', async () => {
    const { repo, dir } = await rewriteSetup('spellings');
    await gitIn(dir, ['remote', 'set-url', 'origin', url(repo, OPEN)]);
    for (const receivePack of ['/usr/bin/git-receive-pack', 'env git-receive-pack', 'git -c receive.denyNonFastForwards=false receive-pack',
      `sh -c 'git-receive-pack ${repo.path}'`]) {
      const r = await push(dir, ['-f', `--receive-pack=${receivePack}`, 'origin', 'evil:main']);
      const cmd = assertRefusedRewrite(r, repo, receivePack);
      // The target ran the command as the client sent it (git appends the quoted repository).
      assert.equal(cmd.command, `${receivePack} '${repo.path}'`);
      assert.equal(cmd.requested, undefined);
      assert.equal(await refOf(repo.path, 'refs/heads/main'), repo.head, `${receivePack}: main unchanged`);
    }
    // The same spellings still push what protection allows: the wrapped command really ran on the target.
    await gitIn(dir, ['checkout', '-q', 'main']);
    const next = await makeCommit(dir, 'ff.txt', 'ff\n', 'fast-forward');
    const ff = await push(dir, [`--receive-pack=sh -c 'exec env git-receive-pack ${repo.path}'`, 'origin', 'main']);
    ok(ff.result, 'fast-forward through sh -c');
    assertAllowedPush(oneEvent(ff.rec, 'git.push'));
    assert.deepEqual(oneEvent(ff.rec, 'git.command').via, ['sh -c', 'exec', 'env']);
    assert.equal(await refOf(repo.path, 'refs/heads/main'), next);
  });

  it('refuses, on a protected connection, a command naming receive-pack that it cannot guard', async () => {
    const repo = await createBareRepo(srv, 'unguardable', { initialCommits: 1 });
    const opts = { port: gw.sshPort, user: OPEN, identityFile: alice.privateKeyFile };
    for (const command of [`nice git-receive-pack '${repo.path}'`, `git-receive-pack '${repo.path}'; true`, `git-rec""eive-pack '${repo.path}' | cat`]) {
      const { rec, result } = await recordOne(gw, () => runSsh(opts, command));
      assert.notEqual(result.code, 0, command);
      assert.match(result.stderr, /gatehouse: this command names receive-pack but is not a plain Git service request/, command);
      const refused = oneEvent(rec, 'ssh.channel.refused');
      assert.equal(refused.command, command);
      assert.equal(eventsOf(rec, 'ssh.exec').length + eventsOf(rec, 'git.command').length, 0, describeEvents(rec));
    }
  });

  it('git-upload-pack "$(cmd)" is a plain exec, not a fetch; a Git-only connection refuses it', async () => {
    const repo = await createBareRepo(srv, 'subst', { initialCommits: 1 });
    const command = `git-upload-pack "$(echo ${repo.path})"`;
    const open = await recordOne(gw, () => runSsh({ port: gw.sshPort, user: OPEN, identityFile: alice.privateKeyFile }, command));
    // It ran on the target (the advertisement names main's commit; upload-pack then sees EOF), relayed as an opaque exec.
    assert.ok(open.result.stdout.includes(repo.head!), open.result.stderr);
    assert.equal(oneEvent(open.rec, 'ssh.exec').command, command);
    assert.equal(eventsOf(open.rec, 'git.command').length, 0, describeEvents(open.rec));
    assert.equal(eventsOf(open.rec, 'git.fetch').length, 0);

    const only = await recordOne(gw, () => runSsh({ port: gw.sshPort, user: CONN, identityFile: alice.privateKeyFile }, command));
    assert.notEqual(only.result.code, 0);
    assert.match(only.result.stderr, /gatehouse: this connection is Git-only: this command is refused/);
    assert.equal(oneEvent(only.rec, 'ssh.channel.refused').command, command);
    assert.equal(eventsOf(only.rec, 'ssh.exec').length, 0);
  });

  it('a Git-only connection (the default with --protect) refuses shells, other commands and SFTP, and runs Git services as stock git asks', async () => {
    const opts = { port: gw.sshPort, user: CONN, identityFile: alice.privateKeyFile };
    const marker = join(work, 'git-only-ran');
    const exec = await recordOne(gw, () => runSsh(opts, `touch ${marker}`));
    assert.notEqual(exec.result.code, 0);
    assert.match(exec.result.stderr, /gatehouse: this connection is Git-only: this command is refused/);
    assert.deepEqual(pick(oneEvent(exec.rec, 'ssh.channel.refused'), ['request', 'command']), { request: 'exec', command: `touch ${marker}` });
    const shell = await recordOne(gw, () => runSsh({ ...opts, extra: ['-T'] }, undefined, `touch ${marker}\n`));
    assert.notEqual(shell.result.code, 0);
    assert.match(shell.result.stderr, /gatehouse: this connection is Git-only: a shell is refused/);
    assert.equal(oneEvent(shell.rec, 'ssh.channel.refused').request, 'shell');
    const sftp = await recordOne(gw, () => runSftp(opts, ['ls /']));
    assert.notEqual(sftp.result.code, 0);
    assert.equal(oneEvent(sftp.rec, 'ssh.channel.refused').name, 'sftp');
    const sftpExec = await recordOne(gw, () => runSftp({ ...opts, extra: ['-s', '/usr/lib/openssh/sftp-server'] }, ['ls /']));
    assert.notEqual(sftpExec.result.code, 0);
    assert.match(String(oneEvent(sftpExec.rec, 'ssh.channel.refused').message), /Git-only: SFTP is refused/);
    assert.equal(existsSync(marker), false, 'nothing ran on the target');

    // A Git service in any spelling runs, but as stock git sends it: without the client's wrappers and git options.
    const { repo, dir } = await rewriteSetup('git-only-spelled');
    const receivePack = 'git -c core.hooksPath=/nonexistent receive-pack';
    const r = await push(dir, ['-f', `--receive-pack=${receivePack}`, 'origin', 'evil:main']);
    const cmd = assertRefusedRewrite(r, repo, receivePack);
    assert.equal(cmd.command, `git-receive-pack '${repo.path}'`);
    assert.equal(cmd.requested, `${receivePack} '${repo.path}'`);
    assert.equal(await refOf(repo.path, 'refs/heads/main'), repo.head);
    const fetched = await recordOne(gw, () => git(dir, ['fetch', '--upload-pack=/usr/bin/git-upload-pack', 'origin'], aliceEnv));
    ok(fetched.result, 'fetch with --upload-pack');
    assert.equal(oneEvent(fetched.rec, 'git.command').command, `git-upload-pack '${repo.path}'`);
    assert.equal(oneEvent(fetched.rec, 'git.fetch').service, 'git-upload-pack');
  });
});

function pick(d: Data, keys: string[]): Data {
  return Object.fromEntries(keys.map((k) => [k, d[k]]));
}
