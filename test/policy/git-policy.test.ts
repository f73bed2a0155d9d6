// Git ref updates decided by the policy (beside protected refs), with real git over smart HTTP
// through the gateway: a force-push to main is refused with the rule in git's own report and the
// target keeps its tip; a fast-forward passes (its pack is inspected to know it is one); a tag
// deletion is refused; other branches may be rewritten; each update's verdict is in the recording;
// a push to a held ref waits (git shows the request id as a "remote:" message) until another
// identity approves it, then lands, and a denied one is refused with the approver's reason.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startTestGateway, type TestGateway } from '../support/gateway.ts';
import { createBareRepo, gitIn, makeCommit, startGitHttpServer, type BareRepo, type GitHttpServer } from '../support/git-servers.ts';
import { eventsOf, failed, git, headOf, ok, recordAll, refOf } from '../git/helpers.ts';

let gw: TestGateway;
let http: GitHttpServer;
let work: string;
let token: string;
let dora: string;

const POLICY = `
rules:
  - name: main-is-not-rewritten
    git: { refs: [refs/heads/main], force: true, delete: true }
    action: deny
  - name: tags-stay
    git: { refs: ["refs/tags/**"], delete: true }
    action: deny
  - name: flag-releases
    git: { refs: ["release/*"] }
    action: audit
  - name: hold-for-review
    git: { refs: ["hold/*"] }
    action: hold
`;

before(async () => {
  work = mkdtempSync(join(tmpdir(), 'gatehouse-git-policy-'));
  [gw, http] = await Promise.all([startTestGateway(), startGitHttpServer({ root: join(work, 'srv') })]);
  await gw.cliOk(['identity', 'add', 'bot', '--kind', 'agent']);
  await gw.cliOk(['connection', 'add', 'forge', '--type', 'git-http', '--host', '127.0.0.1', '--port', String(http.port)]);
  await gw.cliOk(['grant', 'bot', 'forge']);
  token = (await gw.cliOk(['token', 'issue', 'bot', '--ttl', '1h'])).trim().split('\n').pop()!;
  await gw.cliOk(['identity', 'add', 'dora', '--kind', 'human']);
  await gw.cliOk(['grant', 'dora', 'forge', '--action', 'approve']);
  dora = (await gw.cliOk(['token', 'issue', 'dora', '--ttl', '1h'])).trim().split('\n').pop()!;
  const file = join(work, 'policy.yaml');
  writeFileSync(file, POLICY);
  await gw.cliOk(['policy', 'apply', file]);
});

after(async () => {
  await gw?.stop();
  await http?.stop();
  if (work) rmSync(work, { recursive: true, force: true });
});

async function workClone(repo: BareRepo, name: string): Promise<string> {
  const dir = join(work, name);
  await gitIn(work, ['clone', '-q', repo.path, dir]);
  await gitIn(dir, ['remote', 'set-url', 'origin', `http://x:${token}@${gw.url.replace(/^http:\/\//, '')}/git/forge/${repo.name}`]);
  return dir;
}

test('a force-push to main is refused by the rule, a fast-forward passes, other branches may be rewritten; tags stay', async () => {
  const repo = await createBareRepo(join(work, 'srv'), 'app', { initialCommits: 2 });
  const dir = await workClone(repo, 'app-work');

  // Fast-forward: allowed (the pack is inspected to prove it).
  await makeCommit(dir, 'a.txt', 'one', 'third');
  const ff = await recordAll(gw, () => git(dir, ['push', 'origin', 'main']));
  ok(ff.result, 'fast-forward push');
  assert.equal(await refOf(repo.path, 'refs/heads/main'), await headOf(dir));

  // Rewrite of main: refused with the rule in git's own report; the target keeps its tip.
  const tip = await refOf(repo.path, 'refs/heads/main');
  await gitIn(dir, ['commit', '-q', '--amend', '-m', 'third, amended']);
  const forced = await recordAll(gw, () => git(dir, ['push', '--force', 'origin', 'main']));
  failed(forced.result, 'forced push to main');
  assert.match(forced.result.stderr, /! \[remote rejected\] main -> main \(gatehouse policy: force-update refs\/heads\/main is denied by rule "main-is-not-rewritten"\)/);
  assert.equal(await refOf(repo.path, 'refs/heads/main'), tip);
  const push = eventsOf(forced.events, 'git.push').find((e) => (e.data.updates as unknown[]).length > 0)!;
  const update = (push.data.updates as Array<{ ref: string; allowed: boolean; policy?: { decision: string; rule: string } }>)[0]!;
  assert.deepEqual([update.allowed, update.policy?.decision, update.policy?.rule], [false, 'deny', 'main-is-not-rewritten']);

  // Another branch may be rewritten; a release branch is flagged.
  await gitIn(dir, ['checkout', '-q', '-b', 'feature']);
  ok(await git(dir, ['push', 'origin', 'feature']), 'push feature');
  await gitIn(dir, ['commit', '-q', '--amend', '-m', 'feature, amended']);
  ok(await git(dir, ['push', '--force', 'origin', 'feature']), 'force-push feature');
  await gitIn(dir, ['checkout', '-q', '-b', 'release/1']);
  const rel = await recordAll(gw, () => git(dir, ['push', 'origin', 'release/1']));
  ok(rel.result, 'push release');
  const relPush = eventsOf(rel.events, 'git.push').find((e) => (e.data.updates as unknown[]).length > 0)!;
  assert.equal((relPush.data.updates as Array<{ policy?: { decision: string } }>)[0]!.policy?.decision, 'audit');

  // Tags: pushed, then their deletion refused.
  await gitIn(dir, ['tag', 'v1']);
  ok(await git(dir, ['push', 'origin', 'v1']), 'push tag');
  const del = await git(dir, ['push', 'origin', ':refs/tags/v1']);
  failed(del, 'delete tag');
  assert.match(del.stderr, /gatehouse policy: delete refs\/tags\/v1 is denied by rule "tags-stay"/);
  assert.ok(await refOf(repo.path, 'refs/tags/v1'), 'the tag is still there');
});

async function pendingPush(not: string[] = []): Promise<{ id: string; protocol: string; action: { updates: Array<{ ref: string; kind: string }> } }> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    const list = JSON.parse(await gw.cliOk(['approvals', 'list', '--json'], { token: dora })) as Array<{ id: string; protocol: string; action: { kind: string; updates: Array<{ ref: string; kind: string }> } }>;
    const found = list.find((p) => p.action.kind === 'git' && !not.includes(p.id));
    if (found) return found;
    if (Date.now() > deadline) throw new Error(`no pending push: ${JSON.stringify(list)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

test('smart HTTP: a push to a held ref waits with a "remote:" notice until approved, then lands; a denied one is refused and the ref stays', async () => {
  const repo = await createBareRepo(join(work, 'srv'), 'held', { initialCommits: 1 });
  const dir = await workClone(repo, 'held-work');
  await gitIn(dir, ['checkout', '-q', '-b', 'hold/one']);
  await makeCommit(dir, 'h.txt', 'one', 'held one');
  const push = git(dir, ['push', 'origin', 'hold/one']);
  const req = await pendingPush();
  assert.equal(req.protocol, 'git-http');
  assert.deepEqual(req.action.updates.map((u) => [u.ref, u.kind]), [['refs/heads/hold/one', 'create']]);
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(await refOf(repo.path, 'refs/heads/hold/one'), null, 'nothing reached the target while held');
  await gw.cliOk(['approvals', 'approve', req.id, '--reason', 'reviewed'], { token: dora });
  const r = await push;
  ok(r, 'approved push');
  assert.match(r.stderr, new RegExp(`remote: gatehouse: this push is held for approval: .*request ${req.id}`));
  assert.equal(await refOf(repo.path, 'refs/heads/hold/one'), await headOf(dir));

  const tip = await refOf(repo.path, 'refs/heads/hold/one');
  await makeCommit(dir, 'h.txt', 'two', 'held two');
  const second = git(dir, ['push', 'origin', 'hold/one']);
  const req2 = await pendingPush([req.id]);
  await gw.cliOk(['approvals', 'deny', req2.id, '--reason', 'not yet'], { token: dora });
  const d = await second;
  failed(d, 'denied push');
  assert.match(d.stderr, /! \[remote rejected\] hold\/one -> hold\/one \(.*denied by dora: not yet/);
  assert.equal(await refOf(repo.path, 'refs/heads/hold/one'), tip, 'the target kept its tip');
});
