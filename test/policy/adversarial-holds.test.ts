// Adversarial checks of holds on SSH and Git with a real sshd, OpenSSH and git: a rule's timeout
// ends an exec, a typed line and a push held over SSH (nothing runs, the client is told); a
// request can be decided only once and never after it ended; and stopping the gateway while
// something is held refuses it promptly instead of keeping the gateway up until the hold expires.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { statSync, writeFileSync, chmodSync, mkdirSync, mkdtempSync, existsSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateClientKey, type ClientKey } from '../support/sshd.ts';
import { gitSshEnv } from '../support/ssh-client.ts';
import { runSshRaw, startSshWorld, sleep, type SshWorld } from '../ssh/helpers.ts';
import { createBareRepo, gitIn, makeCommit } from '../support/git-servers.ts';
import { git, refOf } from '../git/helpers.ts';

let w: SshWorld;
let bot: ClientKey;
let remote = '';
let dora = '';
let stopped = false;

const POLICY = `
rules:
  - name: quick-chmod
    exec: { programs: [chmod] }
    action: hold
    timeout: 2s
  - name: slow-chown
    exec: { programs: [chgrp] }
    action: hold
  - name: quick-release
    git: { refs: ["refs/heads/release"] }
    action: hold
    timeout: 2s
`;

before(async () => {
  w = await startSshWorld();
  remote = join(w.work, 'remote');
  mkdirSync(remote);
  bot = await generateClientKey(w.work, 'ed25519', 'bot_ed25519');
  await w.gw.cliOk(['identity', 'add', 'bot', '--kind', 'agent']);
  await w.gw.cliOk(['key', 'add', 'bot', `${bot.privateKeyFile}.pub`]);
  await w.gw.cliOk(['grant', 'bot', 'box']);
  await w.gw.cliOk(['identity', 'add', 'dora', '--kind', 'human']);
  await w.gw.cliOk(['grant', 'dora', 'box', '--action', 'approve']);
  dora = (await w.gw.cliOk(['token', 'issue', 'dora', '--ttl', '1h'])).trim().split('\n').pop()!;
  const file = join(w.work, 'policy.yaml');
  writeFileSync(file, POLICY);
  await w.gw.cliOk(['policy', 'apply', file]);
});

after(async () => {
  if (!stopped) await w?.stop();
});

const asBot = () => ({ ...w.opts(), identityFile: bot.privateKeyFile });
const modeOf = (f: string) => statSync(f).mode & 0o777;

function freshFile(name: string): string {
  const f = join(remote, name);
  writeFileSync(f, 'x');
  chmodSync(f, 0o644);
  return f;
}

interface Pending { id: string; action: { kind: string; command?: string } }

async function pendingRequest(match: (p: Pending) => boolean): Promise<Pending> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    const list = JSON.parse(await w.gw.cliOk(['approvals', 'list', '--json'], { token: dora })) as Pending[];
    const found = list.find(match);
    if (found) return found;
    if (Date.now() > deadline) throw new Error(`no pending request: ${JSON.stringify(list)}`);
    await sleep(100);
  }
}

test('timeout: a held exec not decided within the rule\'s 2s is refused; it never runs and cannot be approved afterwards', { timeout: 30_000 }, async () => {
  const f = freshFile('timeout-exec');
  const started = Date.now();
  const run = runSshRaw(asBot(), `chmod 600 ${f}`);
  const req = await pendingRequest((p) => p.action.command === `chmod 600 ${f}`);
  const r = await run;
  assert.ok(Date.now() - started < 12_000, 'refused at the timeout, not later');
  assert.equal(r.code, 1);
  assert.match(r.stderr, /was not decided within 2s; the command was not run/);
  assert.equal(modeOf(f), 0o644);
  const late = await w.gw.cli(['approvals', 'approve', req.id], { token: dora });
  assert.notEqual(late.code, 0);
  assert.match(late.stderr + late.stdout, /already (expired|withdrawn)/);
  await sleep(300);
  assert.equal(modeOf(f), 0o644);
});

test('timeout: a held typed line is refused at the timeout, the shell goes on with the next line', { timeout: 30_000 }, async () => {
  const f = freshFile('timeout-line');
  const after = join(remote, 'timeout-line-after');
  const r = await runSshRaw({ ...asBot(), extra: ['-tt'] }, undefined, `chmod 600 ${f}\necho went-on > ${after}\nexit\n`);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout.toString() + r.stderr, /was not decided within 2s/);
  assert.equal(modeOf(f), 0o644);
  assert.equal(statSync(after).isFile(), true);
});

test('timeout: a push over SSH held by a rule with a 2s timeout is refused; the ref stays', { timeout: 60_000 }, async () => {
  const repo = await createBareRepo(join(w.work, 'srv'), 'app', { initialCommits: 1 });
  const dir = join(w.work, 'app-work');
  await gitIn(w.work, ['clone', '-q', repo.path, dir]);
  await gitIn(dir, ['remote', 'set-url', 'origin', `ssh://box@127.0.0.1:${w.gw.sshPort}${repo.path}`]);
  await gitIn(dir, ['checkout', '-q', '-b', 'release']);
  await makeCommit(dir, 'r.txt', 'one', 'release one');
  const r = await git(dir, ['push', 'origin', 'release'], gitSshEnv({ identityFile: bot.privateKeyFile }));
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /not decided within 2s/);
  assert.equal(await refOf(repo.path, 'refs/heads/release'), null);
});

// Last: it stops the gateway.
test('stopping the gateway while an exec is held refuses it at once; the gateway exits without waiting for the hold', { timeout: 60_000 }, async () => {
  // Outside the world's directory, which stopping it removes.
  const outside = mkdtempSync(join(tmpdir(), 'gatehouse-adv-hold-'));
  const f = join(outside, 'held-at-stop');
  writeFileSync(f, 'x');
  const run = runSshRaw(asBot(), `chgrp 0 ${f} && echo ran > ${f}.ran`);
  await pendingRequest((p) => (p.action.command ?? '').includes('held-at-stop'));
  const started = Date.now();
  stopped = true;
  await w.stop();
  const took = Date.now() - started;
  const r = await run;
  assert.ok(took < 8_000, `the gateway took ${took} ms to stop with a held exec (the hold's timeout is 5 minutes)`);
  assert.notEqual(r.code, 0);
  await sleep(500);
  assert.equal(existsSync(`${f}.ran`), false, 'the held command never ran');
  rmSync(outside, { recursive: true, force: true });
});
