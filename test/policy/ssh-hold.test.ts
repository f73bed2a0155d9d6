// SSH actions held for approval and lines typed into shells, with a real sshd, real OpenSSH and
// git clients and another identity deciding through the CLI: an exec request waits in place
// (approved → it runs in the same channel; denied → exit 1 with the approver's reason; the client
// leaving → the request is withdrawn and nothing runs), a shell script on stdin waits at its held
// line, lines typed into a terminal are decided at Enter (a denied line never runs, the shell goes
// on; a line edited with keys the gateway cannot follow is refused; a held line runs once
// approved), and a Git push over SSH waits until approved. Each check looks at the target's file
// system or repository, and at the recording.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, statSync, writeFileSync, chmodSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { generateClientKey, type ClientKey } from '../support/sshd.ts';
import { gitSshEnv } from '../support/ssh-client.ts';
import { runSshRaw, startSsh, startSshWorld, sleep, type SshWorld } from '../ssh/helpers.ts';
import { createBareRepo, gitIn, makeCommit } from '../support/git-servers.ts';
import { git, refOf, headOf } from '../git/helpers.ts';
import type { EventView, SessionView } from '../../src/cli/format.ts';

let w: SshWorld;
let bot: ClientKey;
let remote = '';
let dora = '';

const POLICY = `
rules:
  - name: no-touch
    exec: { programs: [touch] }
    action: deny
  - name: hold-chmod
    exec: { programs: [chmod] }
    action: hold
  - name: hold-release-pushes
    git: { refs: ["refs/heads/release"] }
    action: hold
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
  await w?.stop();
});

const asBot = () => ({ ...w.opts(), identityFile: bot.privateKeyFile });

interface Pending { id: string; requester: { name: string }; rule: string; protocol: string; action: { kind: string; command?: string; updates?: Array<{ ref: string }> } }

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

async function sessionIds(): Promise<Set<string>> {
  return new Set((JSON.parse(await w.gw.cliOk(['sessions', 'list', '--json', '--limit', '1000'])) as SessionView[]).map((s) => s.id));
}

/** The events of the one session started after `since`, once it ended. */
async function sessionAfter(since: Set<string>): Promise<EventView[]> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    const fresh = (JSON.parse(await w.gw.cliOk(['sessions', 'list', '--json', '--limit', '1000'])) as SessionView[]).filter((s) => !since.has(s.id));
    if (fresh.length === 1 && fresh[0]!.endedAt !== null) return (JSON.parse(await w.gw.cliOk(['sessions', 'show', fresh[0]!.id, '--json'])) as { events: EventView[] }).events;
    if (Date.now() > deadline) throw new Error(`the session did not end in time (${fresh.length} new)`);
    await sleep(100);
  }
}

const modeOf = (f: string) => statSync(f).mode & 0o777;

function freshFile(name: string): string {
  const f = join(remote, name);
  writeFileSync(f, 'x');
  chmodSync(f, 0o644);
  return f;
}

test('exec: a held command waits in its channel until another identity approves it, then runs; the recording holds the request and the decision', async () => {
  const file = freshFile('approved.txt');
  const since = await sessionIds();
  const run = runSshRaw(asBot(), `chmod 600 ${file}`);
  const req = await pendingRequest((p) => p.action.command === `chmod 600 ${file}`);
  assert.equal(req.requester.name, 'bot');
  assert.equal(req.rule, 'hold-chmod');
  assert.equal(req.protocol, 'ssh');
  await sleep(300);
  assert.equal(modeOf(file), 0o644, 'nothing ran while held');
  // No identity approves its own request, even with the approve grant.
  await w.gw.cliOk(['grant', 'bot', 'box', '--action', 'approve']);
  const own = await w.gw.cli(['approvals', 'approve', req.id], { token: (await w.gw.cliOk(['token', 'issue', 'bot', '--ttl', '1h'])).trim().split('\n').pop()! });
  assert.notEqual(own.code, 0);
  assert.match(own.stderr, /no identity may approve or deny its own request/);
  await w.gw.cliOk(['approvals', 'approve', req.id, '--reason', 'ticket 42'], { token: dora });
  const r = await run;
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, new RegExp(`gatehouse: this command is held for approval: .*rule "hold-chmod".*request ${req.id}\\. An approver runs: gatehouse approvals approve ${req.id}`));
  assert.equal(modeOf(file), 0o600, 'the approved command ran');
  const events = await sessionAfter(since);
  const types = events.map((e) => e.type);
  const hold = events.find((e) => e.type === 'policy.hold')!;
  const decision = events.find((e) => e.type === 'policy.decision')!;
  const exec = events.find((e) => e.type === 'ssh.exec')!;
  assert.equal(hold.data.request, req.id);
  assert.deepEqual([decision.data.request, decision.data.kind, decision.data.by], [req.id, 'approved', ['dora']]);
  assert.ok(types.indexOf('policy.decision') < types.indexOf('ssh.exec'), 'the exec is recorded (before it is forwarded) after the decision');
  assert.deepEqual(exec.data.held, { request: req.id, outcome: 'approved' });
  assert.equal((exec.data.policy as { rule: string }).rule, 'hold-chmod');
  assert.equal(events.find((e) => e.type === 'ssh.exit')!.data.code, 0);
});

test('exec: a held command the approver denies never runs; the client gets exit 1 and the reason', async () => {
  const file = freshFile('denied.txt');
  const run = runSshRaw(asBot(), `chmod 600 ${file}`);
  const req = await pendingRequest((p) => p.action.command === `chmod 600 ${file}`);
  await w.gw.cliOk(['approvals', 'deny', req.id, '--reason', 'not on a Friday'], { token: dora });
  const r = await run;
  assert.equal(r.code, 1);
  assert.match(r.stderr, new RegExp(`gatehouse: denied by dora: not on a Friday \\(approval request ${req.id}\\); the command was not run`));
  assert.equal(modeOf(file), 0o644);
});

test('exec: a client that leaves while its command is held withdraws the request; nothing runs, and it can no longer be approved', async () => {
  const file = freshFile('withdrawn.txt');
  const since = await sessionIds();
  const ssh = startSsh(asBot(), `chmod 600 ${file}`);
  const req = await pendingRequest((p) => p.action.command === `chmod 600 ${file}`);
  await ssh.stop();
  const deadline = Date.now() + 10_000;
  while ((JSON.parse(await w.gw.cliOk(['approvals', 'list', '--json'], { token: dora })) as Pending[]).some((p) => p.id === req.id)) {
    if (Date.now() > deadline) throw new Error('the request was not withdrawn');
    await sleep(100);
  }
  const late = await w.gw.cli(['approvals', 'approve', req.id], { token: dora });
  assert.notEqual(late.code, 0);
  assert.match(late.stderr, /already withdrawn/);
  await sleep(300);
  assert.equal(modeOf(file), 0o644);
  const events = await sessionAfter(since);
  assert.equal(events.find((e) => e.type === 'policy.decision')!.data.kind, 'withdrawn');
  assert.equal(events.filter((e) => e.type === 'ssh.exit').length, 0);
});

test('stdin script: `sh` reading commands waits at a held line; approved, the script goes on', async () => {
  const file = freshFile('script.txt');
  const done = join(remote, 'script-done');
  const run = runSshRaw(asBot(), 'sh', `echo start\nchmod 600 ${file}\necho end > ${done}\n`);
  const req = await pendingRequest((p) => (p.action.command ?? '').includes(`chmod 600 ${file}`));
  await sleep(300);
  assert.equal(modeOf(file), 0o644);
  assert.equal(existsSync(done), false, 'nothing after the held line ran');
  await w.gw.cliOk(['approvals', 'approve', req.id], { token: dora });
  const r = await run;
  assert.equal(r.code, 0, r.stderr);
  assert.equal(modeOf(file), 0o600);
  assert.equal(readFileSync(done, 'utf8'), 'end\n');
});

test('terminal: a denied line never runs and the shell goes on; a line edited with cursor keys is refused; the recording says which', async () => {
  const denied = join(remote, 'typed-touch');
  const after = join(remote, 'typed-after');
  const edited = join(remote, 'typed-edited');
  const since = await sessionIds();
  // -tt: a pty, so the gateway reads the input as typed lines (each LF is an Enter).
  const r = await runSshRaw({ ...asBot(), extra: ['-tt'] }, undefined,
    `touch ${denied}\necho after > ${after}\necho x\x1b[Dy > ${edited}\nexit\n`);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(existsSync(denied), false, 'the denied line did not run');
  assert.equal(readFileSync(after, 'utf8').trim(), 'after', 'the next line ran');
  assert.equal(existsSync(edited), false, 'the line the gateway could not follow did not run');
  const shown = r.stdout.toString() + r.stderr;
  assert.match(shown, /gatehouse: the command "touch .*typed-touch" is denied by rule "no-touch"/);
  assert.match(shown, /cannot be read completely \(it was edited with cursor, history or function keys\)/);
  const events = await sessionAfter(since);
  const refused = events.filter((e) => e.type === 'ssh.line.denied');
  assert.equal(refused.length, 2);
  assert.equal(refused[0]!.data.text, `touch ${denied}`);
  assert.equal((refused[0]!.data.policy as { rule: string }).rule, 'no-touch');
  assert.match(String(refused[1]!.data.unreadable), /cursor/);
});

test('terminal: a held line waits at Enter; approved, it runs in the same shell', async () => {
  const file = freshFile('typed-chmod.txt');
  const run = runSshRaw({ ...asBot(), extra: ['-tt'] }, undefined, `chmod 600 ${file}\nexit\n`);
  const req = await pendingRequest((p) => p.action.command === `chmod 600 ${file}`);
  await sleep(300);
  assert.equal(modeOf(file), 0o644);
  await w.gw.cliOk(['approvals', 'approve', req.id], { token: dora });
  const r = await run;
  assert.equal(r.code, 0, r.stderr);
  assert.equal(modeOf(file), 0o600);
});

test('git over SSH: a push to a held ref waits until approved, then lands; a denied one is refused with the reason and the ref stays', async () => {
  const repo = await createBareRepo(join(w.work, 'srv'), 'app', { initialCommits: 1 });
  const dir = join(w.work, 'app-work');
  await gitIn(w.work, ['clone', '-q', repo.path, dir]);
  await gitIn(dir, ['remote', 'set-url', 'origin', `ssh://box@127.0.0.1:${w.gw.sshPort}${repo.path}`]);
  const env = gitSshEnv({ identityFile: bot.privateKeyFile });
  await gitIn(dir, ['checkout', '-q', '-b', 'release']);
  await makeCommit(dir, 'r.txt', 'one', 'release one');

  const push = git(dir, ['push', 'origin', 'release'], env);
  const req = await pendingRequest((p) => p.protocol === 'ssh' && p.action.kind === 'git');
  assert.deepEqual(req.action.updates!.map((u) => u.ref), ['refs/heads/release']);
  assert.equal(await refOf(repo.path, 'refs/heads/release'), null, 'nothing reached the target while held');
  await w.gw.cliOk(['approvals', 'approve', req.id], { token: dora });
  const r = await push;
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /gatehouse: this push is held for approval/);
  assert.equal(await refOf(repo.path, 'refs/heads/release'), await headOf(dir));

  await makeCommit(dir, 'r.txt', 'two', 'release two');
  const tip = await refOf(repo.path, 'refs/heads/release');
  const second = git(dir, ['push', 'origin', 'release'], env);
  const req2 = await pendingRequest((p) => p.action.kind === 'git' && p.id !== req.id);
  await w.gw.cliOk(['approvals', 'deny', req2.id, '--reason', 'freeze'], { token: dora });
  const d = await second;
  assert.notEqual(d.code, 0);
  assert.match(d.stderr, /! \[remote rejected\] release -> release \(.*denied by dora: freeze/);
  assert.equal(await refOf(repo.path, 'refs/heads/release'), tip, 'the target kept its tip');
});
