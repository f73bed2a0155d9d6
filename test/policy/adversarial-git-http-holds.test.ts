// Adversarial checks of held pushes over smart HTTP with real git and a real git http-backend
// through the gateway: a rule's timeout refuses the push and the ref stays; stopping the gateway
// while a push is held refuses it promptly (the gateway does not wait for the hold), and the
// target never sees the push.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startTestGateway, type TestGateway } from '../support/gateway.ts';
import { createBareRepo, gitIn, makeCommit, startGitHttpServer, type BareRepo, type GitHttpServer } from '../support/git-servers.ts';
import { failed, git, refOf } from '../git/helpers.ts';

let gw: TestGateway;
let http: GitHttpServer;
let work: string;
let token: string;
let dora: string;
let stopped = false;

const POLICY = `
rules:
  - name: quick-hold
    git: { refs: ["quick/*"] }
    action: hold
    timeout: 2s
  - name: slow-hold
    git: { refs: ["slow/*"] }
    action: hold
`;

before(async () => {
  work = mkdtempSync(join(tmpdir(), 'gatehouse-adv-git-'));
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
  if (!stopped) await gw?.stop();
  await http?.stop();
  if (work) rmSync(work, { recursive: true, force: true });
});

async function workClone(repo: BareRepo, name: string): Promise<string> {
  const dir = join(work, name);
  await gitIn(work, ['clone', '-q', repo.path, dir]);
  await gitIn(dir, ['remote', 'set-url', 'origin', `http://x:${token}@${gw.url.replace(/^http:\/\//, '')}/git/forge/${repo.name}`]);
  return dir;
}

async function pendingPush(): Promise<{ id: string }> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    const list = JSON.parse(await gw.cliOk(['approvals', 'list', '--json'], { token: dora })) as Array<{ id: string; action: { kind: string } }>;
    const found = list.find((p) => p.action.kind === 'git');
    if (found) return found;
    if (Date.now() > deadline) throw new Error('no pending push');
    await new Promise((r) => setTimeout(r, 100));
  }
}

test('smart HTTP: a held push not decided within the rule\'s 2s is refused; the ref stays', { timeout: 60_000 }, async () => {
  const repo = await createBareRepo(join(work, 'srv'), 'quick', { initialCommits: 1 });
  const dir = await workClone(repo, 'quick-work');
  await gitIn(dir, ['checkout', '-q', '-b', 'quick/one']);
  await makeCommit(dir, 'q.txt', 'one', 'quick one');
  const started = Date.now();
  const r = await git(dir, ['push', 'origin', 'quick/one']);
  failed(r, 'timed-out push');
  assert.ok(Date.now() - started < 30_000, 'refused at its timeout, not at the 5-minute default');
  assert.match(r.stderr, /not decided within 2s/);
  assert.equal(await refOf(repo.path, 'refs/heads/quick/one'), null);
});

// Last: it stops the gateway.
test('smart HTTP: stopping the gateway while a push is held refuses it promptly; the target never sees it', { timeout: 60_000 }, async () => {
  const repo = await createBareRepo(join(work, 'srv'), 'slow', { initialCommits: 1 });
  const dir = await workClone(repo, 'slow-work');
  await gitIn(dir, ['checkout', '-q', '-b', 'slow/one']);
  await makeCommit(dir, 's.txt', 'one', 'slow one');
  const push = git(dir, ['push', 'origin', 'slow/one']);
  await pendingPush();
  const started = Date.now();
  stopped = true;
  await gw.stop();
  const took = Date.now() - started;
  const r = await push;
  assert.ok(took < 8_000, `the gateway took ${took} ms to stop with a held push (the hold's timeout is 5 minutes)`);
  failed(r, 'push held at shutdown');
  await new Promise((res) => setTimeout(res, 500));
  assert.equal(await refOf(repo.path, 'refs/heads/slow/one'), null);
});
