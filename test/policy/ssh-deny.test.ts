// SSH actions decided by the policy, with a real sshd and the real OpenSSH clients (ssh, sftp,
// scp in both its SFTP and legacy modes): exec requests (with an evasion corpus), shells, and
// file changes. Each refusal is checked on both sides: the client sees it in its own terms, and
// the target's file system (this machine: "remote" paths are local paths) shows nothing ran or
// changed. Allowed actions still work, and the recording holds each decision with its verdict.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, lstatSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { userInfo } from 'node:os';
import { runScp, runSftp } from '../support/ssh-client.ts';
import { generateClientKey, type ClientKey } from '../support/sshd.ts';
import { runSshRaw, startSsh, startSshWorld, sleep, type SshWorld } from '../ssh/helpers.ts';
import { FXF, FXP, RawSftp, attrs, statusOf, str, u32 } from '../ssh/raw-sftp.ts';
import type { EventView, SessionView } from '../../src/cli/format.ts';

let w: SshWorld;
let bot: ClientKey;
let remote = '';
let guarded = '';
let local = '';
let policyFile = '';
let version = 0;

const policy = (guardedDir: string, freeDir: string) => `
rules:
  - name: no-rm-rf
    exec: { commands: ["rm -rf *", "rm -fr *"] }
    action: deny
  - name: no-touch
    exec: { programs: [touch] }
    action: deny
    message: touching files is not allowed here
  - name: hold-chmod
    exec: { programs: [chmod] }
    action: hold
  - name: flag-id
    exec: { programs: [id] }
    action: audit
  - name: no-shells-for-agents
    when: { kinds: [agent] }
    shell: true
    action: deny
  - name: guarded-files
    files: { paths: ["${guardedDir}", "${guardedDir}/*"] }
    action: deny
  - name: flag-free-uploads
    files: { paths: ["${freeDir}/audited*"], ops: [write] }
    action: audit
`;

before(async () => {
  w = await startSshWorld();
  remote = join(w.work, 'remote');
  guarded = join(remote, 'guarded');
  local = join(w.work, 'local');
  mkdirSync(guarded, { recursive: true });
  mkdirSync(join(guarded, 'empty'));
  mkdirSync(join(remote, 'x'));
  mkdirSync(local);
  writeFileSync(join(guarded, 'keep.txt'), 'keep\n');
  writeFileSync(join(remote, 'free.txt'), 'free\n');
  writeFileSync(join(local, 'up.txt'), 'uploaded\n');
  bot = await generateClientKey(w.work, 'ed25519', 'bot_ed25519');
  await w.gw.cliOk(['identity', 'add', 'bot', '--kind', 'agent']);
  await w.gw.cliOk(['key', 'add', 'bot', `${bot.privateKeyFile}.pub`]);
  await w.gw.cliOk(['grant', 'bot', 'box']);
  policyFile = join(w.work, 'policy.yaml');
  writeFileSync(policyFile, policy(guarded, remote));
  await w.gw.cliOk(['policy', 'apply', policyFile]);
  version = 1;
});

after(async () => {
  await w?.stop();
});

const asBot = () => ({ ...w.opts(), identityFile: bot.privateKeyFile });

/** The events of the sessions started after `since` (oldest first), read with `gatehouse sessions show ID --json` once they ended. */
async function sessionAfter(since: Set<string>): Promise<EventView[]> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    const fresh = (JSON.parse(await w.gw.cliOk(['sessions', 'list', '--json', '--limit', '1000'])) as SessionView[]).filter((s) => !since.has(s.id));
    if (fresh.length > 0 && fresh.every((s) => s.endedAt !== null)) {
      fresh.sort((a, b) => (a.startedAt < b.startedAt ? -1 : a.startedAt > b.startedAt ? 1 : a.id < b.id ? -1 : 1));
      const events: EventView[] = [];
      for (const s of fresh) events.push(...(JSON.parse(await w.gw.cliOk(['sessions', 'show', s.id, '--json'])) as { events: EventView[] }).events);
      return events;
    }
    if (Date.now() > deadline) throw new Error('the session did not end in time');
    await sleep(100);
  }
}

async function sessionIds(): Promise<Set<string>> {
  return new Set((JSON.parse(await w.gw.cliOk(['sessions', 'list', '--json', '--limit', '1000'])) as SessionView[]).map((s) => s.id));
}

// ── exec ───────────────────────────────────────────────────────────────────────────────────

test('exec: a denied command never runs; the client gets "gatehouse: <reason>" and exit 1; one event holds the command and the verdict', async () => {
  const marker = join(remote, 'touched-plain');
  const since = await sessionIds();
  const r = await runSshRaw(w.opts(), `touch ${marker}`);
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /gatehouse: touching files is not allowed here \(rule "no-touch"\)/);
  assert.equal(existsSync(marker), false, 'the target did not run it');
  const events = await sessionAfter(since);
  const execs = events.filter((e) => e.type === 'ssh.exec');
  assert.equal(execs.length, 1);
  assert.equal(execs[0]!.data.command, `touch ${marker}`);
  assert.deepEqual(execs[0]!.data.policy, { decision: 'deny', rule: 'no-touch', version, reason: 'touching files is not allowed here (rule "no-touch")' });
  assert.equal(events.filter((e) => e.type === 'ssh.exit').length, 0, 'nothing ran, so no exit of the target is recorded');
  // The human-readable timeline makes the denial stand out.
  const id = (JSON.parse(await w.gw.cliOk(['sessions', 'list', '--json', '--limit', '1000'])) as SessionView[]).find((s) => !since.has(s.id))!.id;
  assert.match(await w.gw.cliOk(['sessions', 'show', id]), /exec +\[ch 1\] touch .*touched-plain {2}✖ DENIED by rule "no-touch" \(policy v1\): touching files is not allowed here/);
});

test('exec evasions: quotes, sh -c, env, separators, substitutions, absolute paths, wrappers, variables: nothing runs', async () => {
  const cases: Array<(m: string) => string> = [
    (m) => `'touch' ${m}`,
    (m) => `"tou"ch ${m}`,
    (m) => `t\\ouch ${m}`,
    (m) => `sh -c 'touch ${m}'`,
    (m) => `bash -c "echo hi && touch ${m}"`,
    (m) => `env touch ${m}`,
    (m) => `env -i FOO=1 touch ${m}`,
    (m) => `FOO=1 touch ${m}`,
    (m) => `true; touch ${m}`,
    (m) => `true && touch ${m}`,
    (m) => `false || touch ${m}`,
    (m) => `echo x | touch ${m}`,
    (m) => `echo $(touch ${m})`,
    (m) => `echo \`touch ${m}\``,
    (m) => `(touch ${m})`,
    (m) => `{ touch ${m}; }`,
    (m) => `/usr/bin/touch ${m}`,
    (m) => `/bin/../usr/bin/touch ${m}`,
    (m) => `nohup touch ${m}`,
    (m) => `timeout 5 touch ${m}`,
    (m) => `eval touch ${m}`,
    (m) => `echo ok\ntouch ${m}`,
    (m) => `T=touch; $T ${m}`,
    (m) => `$(echo touch) ${m}`,
    (m) => `find /tmp -maxdepth 0 -exec touch ${m} \\;`,
  ];
  for (const [i, make] of cases.entries()) {
    const marker = join(remote, `evasion-${i}`);
    const command = make(marker);
    const r = await runSshRaw(w.opts(), command);
    assert.equal(r.code, 1, `${command}: ${r.stderr}`);
    assert.match(r.stderr, /gatehouse: .*(rule "no-touch"|could apply)/, command);
    assert.equal(existsSync(marker), false, `the target ran ${JSON.stringify(command)}`);
  }
});

test('exec: a denied command with control characters in it is quoted back with them escaped', async () => {
  const dir = join(remote, 'ctl-victim');
  mkdirSync(dir, { recursive: true });
  const r = await runSshRaw(w.opts(), `rm -rf ${dir} '\x1b]0;pwned\x07'`);
  assert.equal(r.code, 1);
  assert.ok(!/[\x07\x1b]/.test(r.stderr), `raw control characters reached the client: ${JSON.stringify(r.stderr)}`);
  assert.match(r.stderr, /gatehouse: the command "rm -rf .*ctl-victim \\x1b\]0;pwned\\x07" is denied by rule "no-rm-rf"/);
  assert.ok(existsSync(dir));
});

test('exec: rm -rf is refused however it is written, and the directory stays', async () => {
  const dir = join(remote, 'victim');
  mkdirSync(join(dir, 'sub'), { recursive: true });
  for (const command of [`rm -rf ${dir}`, `/bin/rm -rf ${dir}`, `cd / && rm -fr ${dir}`, `sh -c "rm -rf ${dir}"`, `sudo -u nobody rm -rf ${dir}`, `"rm" '-rf' ${dir}`]) {
    const r = await runSshRaw(w.opts(), command);
    assert.equal(r.code, 1, `${command}: ${r.stderr}`);
    assert.match(r.stderr, /gatehouse: the command "rm -(rf|fr) .*" is denied by rule "no-rm-rf"/, command);
    assert.ok(existsSync(join(dir, 'sub')), `${command} removed the directory`);
  }
});

test('exec: audited and unmatched commands run (held ones: ssh-hold.test.ts)', async () => {
  const since = await sessionIds();
  const audited = await runSshRaw(w.opts(), 'id -un');
  assert.equal(audited.code, 0, audited.stderr);
  assert.ok(audited.stdout.toString().trim().length > 0);
  const events = await sessionAfter(since);
  const exec = events.find((e) => e.type === 'ssh.exec')!;
  assert.deepEqual(exec.data.policy, { decision: 'audit', rule: 'flag-id', version, reason: 'the command "id -un" is allowed and flagged by rule "flag-id"' });
  assert.equal(events.find((e) => e.type === 'ssh.exit')!.data.code, 0);
  const id = (JSON.parse(await w.gw.cliOk(['sessions', 'list', '--json', '--limit', '1000'])) as SessionView[]).find((s) => !since.has(s.id))!.id;
  assert.match(await w.gw.cliOk(['sessions', 'show', id]), /exec +\[ch 1\] id -un {2}⚑ flagged by rule "flag-id" \(policy v1\)/);

  const plain = await runSshRaw(w.opts(), 'echo allowed && ls /');
  assert.equal(plain.code, 0, plain.stderr);
  assert.match(plain.stdout.toString(), /^allowed\n/);
});

// ── shells ─────────────────────────────────────────────────────────────────────────────────

test('shell: refused for an agent (no pty and with a pty), the client sees why; a human still gets one', async () => {
  const marker = join(remote, 'shell-ran');
  const since = await sessionIds();
  const r = await runSshRaw(asBot(), undefined, `touch ${marker}-x; echo ran > ${marker}\nexit\n`);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /gatehouse: opening an interactive shell is denied by rule "no-shells-for-agents"/);
  assert.equal(existsSync(marker), false, 'no shell ran on the target');
  const events = await sessionAfter(since);
  const shell = events.find((e) => e.type === 'ssh.shell')!;
  assert.equal((shell.data.policy as { decision: string; rule: string }).decision, 'deny');
  assert.equal((shell.data.policy as { rule: string }).rule, 'no-shells-for-agents');
  assert.equal(events.filter((e) => e.type === 'term.in').length, 0, 'no keystroke was taken');

  const tty = await runSshRaw({ ...asBot(), extra: ['-tt'] }, undefined, `echo ran > ${marker}\nexit\n`);
  assert.notEqual(tty.code, 0);
  assert.match(tty.stdout.toString() + tty.stderr, /gatehouse: opening an interactive shell is denied/);
  assert.equal(existsSync(marker), false);

  const human = await runSshRaw(w.opts(), undefined, `echo ran > ${marker}\nexit\n`);
  assert.equal(human.code, 0, human.stderr);
  assert.equal(readFileSync(marker, 'utf8'), 'ran\n');
  // Exec rules apply to the agent as to anyone: its exec requests still run.
  const exec = await runSshRaw(asBot(), 'echo agent-exec');
  assert.equal(exec.code, 0, exec.stderr);
  assert.equal(exec.stdout.toString(), 'agent-exec\n');
});

// ── SFTP ───────────────────────────────────────────────────────────────────────────────────

test('sftp: uploads, removals, renames, mkdir, rmdir, chmod and links in a guarded directory are refused and change nothing', async () => {
  const keep = join(guarded, 'keep.txt');
  const mode = statSync(keep).mode & 0o777;
  const up = join(local, 'up.txt');
  const since = await sessionIds();
  const cases: Array<[string, () => void]> = [
    [`put ${up} ${guarded}/new.txt`, () => assert.equal(existsSync(join(guarded, 'new.txt')), false)],
    [`put ${up} ${remote}/x/../guarded/dotdot.txt`, () => assert.equal(existsSync(join(guarded, 'dotdot.txt')), false)],
    [`put ${up} ${keep}`, () => assert.equal(readFileSync(keep, 'utf8'), 'keep\n')],
    [`rm ${keep}`, () => assert.ok(existsSync(keep))],
    [`rename ${keep} ${remote}/moved.txt`, () => { assert.ok(existsSync(keep)); assert.equal(existsSync(join(remote, 'moved.txt')), false); }],
    [`rename ${remote}/free.txt ${guarded}/in.txt`, () => { assert.ok(existsSync(join(remote, 'free.txt'))); assert.equal(existsSync(join(guarded, 'in.txt')), false); }],
    [`mkdir ${guarded}/sub`, () => assert.equal(existsSync(join(guarded, 'sub')), false)],
    [`rmdir ${guarded}/empty`, () => assert.ok(existsSync(join(guarded, 'empty')))],
    [`chmod 600 ${keep}`, () => assert.equal(statSync(keep).mode & 0o777, mode)],
    [`ln -s ${remote}/free.txt ${guarded}/soft`, () => assert.throws(() => lstatSync(join(guarded, 'soft')))],
    [`ln ${remote}/free.txt ${guarded}/hard`, () => assert.equal(existsSync(join(guarded, 'hard')), false)],
  ];
  for (const [command, unchanged] of cases) {
    const r = await runSftp(w.opts(), [command]);
    assert.notEqual(r.code, 0, `${command} was not refused: ${r.stdout} ${r.stderr}`);
    assert.match(r.stderr, /[Pp]ermission denied/, command);
    unchanged();
  }
  // Reading the guarded directory is no change: allowed.
  const get = await runSftp(w.opts(), [`get ${keep} ${local}/got.txt`]);
  assert.equal(get.code, 0, get.stderr);
  assert.equal(readFileSync(join(local, 'got.txt'), 'utf8'), 'keep\n');
  const first = await sessionAfter(since);
  const denied = first.filter((e) => e.type === 'file.op' && e.data.status === 'denied by policy');
  assert.ok(denied.length >= 1, 'the denial is recorded');
  assert.equal((denied[0]!.data.policy as { rule: string }).rule, 'guarded-files');
  assert.equal(denied[0]!.data.path, join(guarded, 'new.txt'));
});

test('sftp: allowed uploads still work; an audited one carries its verdict', async () => {
  const since = await sessionIds();
  const r = await runSftp(w.opts(), [`put ${local}/up.txt ${remote}/audited.txt`, `put ${local}/up.txt ${remote}/plain.txt`]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(readFileSync(join(remote, 'audited.txt'), 'utf8'), 'uploaded\n');
  assert.equal(readFileSync(join(remote, 'plain.txt'), 'utf8'), 'uploaded\n');
  const events = await sessionAfter(since);
  const opens = events.filter((e) => e.type === 'file.open');
  const audited = opens.find((e) => e.data.path === join(remote, 'audited.txt'))!;
  assert.equal((audited.data.policy as { decision: string }).decision, 'audit');
  assert.equal((audited.data.policy as { rule: string }).rule, 'flag-free-uploads');
  assert.equal(opens.find((e) => e.data.path === join(remote, 'plain.txt'))!.data.policy, undefined);
});

test('raw SFTP: a refused request gets STATUS 3 with the reason, is never forwarded, and the channel goes on (pipelined and split packets too)', { timeout: 30_000 }, async () => {
  const c = await RawSftp.connect({ port: w.gw.sshPort, user: 'box', privateKeyFile: w.key.privateKeyFile });
  try {
    const refused = await c.request(FXP.OPEN, str(join(guarded, 'raw.txt')), u32(FXF.WRITE | FXF.CREAT | FXF.TRUNC), attrs());
    assert.match(statusOf(refused), /^3 gatehouse: write .*raw\.txt is denied by rule "guarded-files"/);
    assert.equal(existsSync(join(guarded, 'raw.txt')), false);

    // Three requests in one write, the refused one in the middle: the others reach the target and are answered.
    const a = c.build(FXP.MKDIR, str(join(remote, 'raw-a')), attrs());
    const b = c.build(FXP.REMOVE, str(join(guarded, 'keep.txt')));
    const d = c.build(FXP.MKDIR, str(join(remote, 'raw-d')), attrs());
    await c.write(Buffer.concat([a.bytes, b.bytes, d.bytes]));
    const [ra, rb, rd] = await Promise.all([a.reply, b.reply, d.reply]);
    assert.match(statusOf(ra), /^0\b/);
    assert.match(statusOf(rb), /^3 gatehouse: remove .* is denied by rule "guarded-files"/);
    assert.match(statusOf(rd), /^0\b/);
    assert.ok(existsSync(join(remote, 'raw-a')) && existsSync(join(remote, 'raw-d')));
    assert.ok(existsSync(join(guarded, 'keep.txt')));

    // A refused request written a few bytes at a time: no part of it is forwarded ahead of the decision.
    const e = c.build(FXP.RMDIR, str(join(guarded, 'empty')));
    for (let i = 0; i < e.bytes.length; i += 3) {
      await c.write(e.bytes.subarray(i, i + 3));
      await sleep(5);
    }
    assert.match(statusOf(await e.reply), /^3 gatehouse: rmdir/);
    assert.ok(existsSync(join(guarded, 'empty')));

    // SYMLINK as OpenSSH sends it (link target first, then the link to make), and a hard link.
    const sym = await c.request(FXP.SYMLINK, str(join(remote, 'free.txt')), str(join(guarded, 'raw-link')));
    assert.match(statusOf(sym), /^3 gatehouse: symlink/);
    const hard = await c.request(FXP.EXTENDED, str('hardlink@openssh.com'), str(join(remote, 'free.txt')), str(join(guarded, 'raw-hard')));
    assert.match(statusOf(hard), /^3 gatehouse: link/);
    assert.throws(() => lstatSync(join(guarded, 'raw-link')));
    assert.equal(existsSync(join(guarded, 'raw-hard')), false);

    // FSETSTAT through a handle opened for reading a guarded file: decided on the handle's path.
    const keepMode = statSync(join(guarded, 'keep.txt')).mode & 0o777;
    const rh = await c.open(join(guarded, 'keep.txt'), FXF.READ);
    const fset = await c.request(FXP.FSETSTAT, str(rh), attrs(0o600));
    assert.match(statusOf(fset), /^3 gatehouse: setstat/);
    assert.equal(statSync(join(guarded, 'keep.txt')).mode & 0o777, keepMode);
    await c.close(rh);

    // The channel is still in step: an allowed upload completes.
    const h = await c.open(join(remote, 'raw-ok.txt'), FXF.WRITE | FXF.CREAT | FXF.TRUNC);
    const wr = await c.request(FXP.WRITE, str(h), Buffer.alloc(8), str('raw ok'));
    assert.match(statusOf(wr), /^0\b/);
    assert.match(statusOf(await c.close(h)), /^0\b/);
    assert.equal(readFileSync(join(remote, 'raw-ok.txt'), 'utf8'), 'raw ok');
  } finally {
    c.end();
  }
});

test('raw SFTP: a denial waits for the target\'s stream to reach a packet boundary (big READ replies in flight)', { timeout: 30_000 }, async () => {
  const big = join(remote, 'big-read.bin');
  writeFileSync(big, Buffer.alloc(4 * 1024 * 1024, 7));
  const c = await RawSftp.connect({ port: w.gw.sshPort, user: 'box', privateKeyFile: w.key.privateKeyFile });
  try {
    const h = await c.open(big, FXF.READ);
    const reads = Array.from({ length: 32 }, (_, i) => c.build(FXP.READ, str(h), Buffer.concat([u32(0), u32(i * 131072)]), u32(131072)));
    const denied = c.build(FXP.REMOVE, str(join(guarded, 'keep.txt')));
    // Reads first, so their large replies are streaming back (likely mid-packet) when the denial is made.
    await c.write(Buffer.concat(reads.map((r) => r.bytes)));
    await sleep(15);
    await c.write(denied.bytes);
    const replies = await Promise.all(reads.map((r) => r.reply));
    for (const r of replies) assert.equal(r.type, FXP.DATA);
    assert.match(statusOf(await denied.reply), /^3 gatehouse: remove/);
    assert.ok(existsSync(join(guarded, 'keep.txt')));
    assert.match(statusOf(await c.close(h)), /^0\b/);
  } finally {
    c.end();
  }
});

// ── scp ────────────────────────────────────────────────────────────────────────────────────

test('scp (SFTP protocol) into the guarded directory is refused; the file does not appear', async () => {
  const r = await runScp(w.opts(), [join(local, 'up.txt'), `remote:${guarded}/scp-sftp.txt`]);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /[Pp]ermission denied/);
  assert.equal(existsSync(join(guarded, 'scp-sftp.txt')), false);
});

test('legacy scp (-O): a refused file gets scp\'s own error line, others in the same run still land; -r into the guarded directory creates nothing', async () => {
  writeFileSync(join(local, 'second.txt'), 'second\n');
  const since = await sessionIds();
  const one = await runScp(w.opts(), ['-O', join(local, 'up.txt'), `remote:${guarded}/legacy.txt`]);
  assert.notEqual(one.code, 0);
  assert.match(one.stderr, /gatehouse: write .*legacy\.txt is denied by rule "guarded-files"/);
  assert.equal(existsSync(join(guarded, 'legacy.txt')), false);
  const events = await sessionAfter(since);
  const op = events.find((e) => e.type === 'file.op' && e.data.via === 'scp')!;
  assert.equal(op.data.status, 'denied by policy');
  assert.equal((op.data.policy as { rule: string }).rule, 'guarded-files');

  // Into a directory (the file's path depends on it: the gateway asks the target first).
  const dirTarget = await runScp(w.opts(), ['-O', join(local, 'up.txt'), join(local, 'second.txt'), `remote:${guarded}`]);
  assert.notEqual(dirTarget.code, 0);
  assert.equal(existsSync(join(guarded, 'up.txt')), false);
  assert.equal(existsSync(join(guarded, 'second.txt')), false);

  const tree = join(local, 'tree');
  mkdirSync(join(tree, 'inner'), { recursive: true });
  writeFileSync(join(tree, 'inner', 'f.txt'), 'f\n');
  const rec = await runScp(w.opts(), ['-O', '-r', tree, `remote:${guarded}/`]);
  assert.notEqual(rec.code, 0);
  assert.match(rec.stderr, /gatehouse: mkdir .*tree is denied/);
  assert.equal(existsSync(join(guarded, 'tree')), false);

  // Allowed: a legacy upload elsewhere lands intact.
  const okUp = await runScp(w.opts(), ['-O', join(local, 'up.txt'), join(local, 'second.txt'), `remote:${remote}/`]);
  assert.equal(okUp.code, 0, okUp.stderr);
  assert.equal(readFileSync(join(remote, 'second.txt'), 'utf8'), 'second\n');
  assert.equal(readFileSync(join(remote, 'up.txt'), 'utf8'), 'uploaded\n');
});

// ── a new policy in an open session ─────────────────────────────────────────────────────────

test('a policy applied while a session is open applies to its next exec', async () => {
  const sock = join(w.work, 'cm.sock');
  const master = startSsh({ ...w.opts(), extra: ['-M', '-S', sock, '-N'] });
  try {
    const deadline = Date.now() + 15_000;
    while (!existsSync(sock)) {
      if (Date.now() > deadline) throw new Error(`the control master did not start: ${master.stderr()}`);
      await sleep(50);
    }
    const viaMaster = { ...w.opts(), extra: ['-S', sock, '-o', 'ControlMaster=no'] };
    const marker = join(remote, 'late-marker');
    const first = await runSshRaw(viaMaster, `echo first > ${marker}`);
    assert.equal(first.code, 0, first.stderr);
    const file = join(w.work, 'late-policy.yaml');
    writeFileSync(file, `${policy(guarded, remote)}
  - name: no-echo-now
    exec: { programs: [echo] }
    action: deny
`);
    await w.gw.cliOk(['policy', 'apply', file]);
    version++;
    const second = await runSshRaw(viaMaster, `echo second > ${marker}`);
    assert.equal(second.code, 1, second.stderr);
    assert.match(second.stderr, /gatehouse: the command "echo second" is denied by rule "no-echo-now"/);
    assert.equal(readFileSync(marker, 'utf8'), 'first\n');
  } finally {
    await master.stop();
    await w.gw.cliOk(['policy', 'apply', policyFile]);
    version++;
  }
});

test('hostile legacy scp streams: an empty file name (scp then writes to the target path) and a name with U+2028 are decided like any other', async () => {
  const target = join(guarded, 'hostile.txt');
  const empty = await runSshRaw(w.opts(), `scp -t ${target}`, Buffer.from('C0644 5 \nhello\0'));
  assert.match(empty.stdout.toString('latin1'), /\x01gatehouse: write .*hostile\.txt is denied by rule "guarded-files"/);
  assert.equal(existsSync(target), false);
  const odd = await runSshRaw(w.opts(), `scp -t ${guarded}`, Buffer.from('C0644 5 a\u2028b\nhello\0'));
  assert.match(odd.stdout.toString('utf8'), /\x01gatehouse: write .*a\u2028b is denied/);
  assert.equal(existsSync(join(guarded, 'a\u2028b')), false);
  // The same stream to an allowed place lands: the refusal above was the policy's, not a parsing accident.
  const fine = await runSshRaw(w.opts(), `scp -t ${remote}`, Buffer.from('C0644 5 a\u2028b\nhello\0'));
  assert.equal(fine.code, 0, fine.stderr);
  assert.equal(readFileSync(join(remote, 'a\u2028b'), 'utf8'), 'hello');
});

test('relative paths are judged where the server puts them: refused before the gateway knows the base, decided on the resolved path after', { timeout: 30_000 }, async () => {
  const home = userInfo().homedir;
  const intoGuarded = relative(home, join(guarded, 'rel.txt'));
  const c = await RawSftp.connect({ port: w.gw.sshPort, user: 'box', privateKeyFile: w.key.privateKeyFile });
  try {
    const early = await c.request(FXP.OPEN, str(intoGuarded), u32(FXF.WRITE | FXF.CREAT), attrs());
    assert.match(statusOf(early), /^3 gatehouse: the path ".*" is relative and the gateway does not know the directory/);
    const cwd = await c.request(FXP.REALPATH, str('.'));
    assert.equal(cwd.type, FXP.NAME);
    const late = await c.request(FXP.OPEN, str(intoGuarded), u32(FXF.WRITE | FXF.CREAT), attrs());
    assert.match(statusOf(late), /^3 gatehouse: write .*guarded\/rel\.txt is denied by rule "guarded-files"/);
    assert.equal(existsSync(join(guarded, 'rel.txt')), false);
    // A relative path elsewhere is allowed once placed.
    const fine = relative(home, join(remote, 'rel-ok'));
    assert.match(statusOf(await c.request(FXP.MKDIR, str(fine), attrs())), /^0\b/);
    assert.ok(existsSync(join(remote, 'rel-ok')));
  } finally {
    c.end();
  }
  // Legacy scp resolves a relative destination against the login directory: so does the gateway.
  const r = await runScp(w.opts(), ['-O', join(local, 'up.txt'), `remote:${intoGuarded}`]);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /gatehouse: write .*guarded\/rel\.txt is denied by rule "guarded-files"/);
  assert.equal(existsSync(join(guarded, 'rel.txt')), false);
});

test('a shell reading commands on stdin: each chunk is decided like an exec; a denied one closes the channel and nothing of it runs', { timeout: 60_000 }, async () => {
  const a = join(remote, 'stdin-a');
  const m = join(remote, 'stdin-marker');
  // One chunk: refused whole, its harmless first line included.
  const piped = await runSshRaw(w.opts(), 'sh', `echo one > ${a}\ntouch ${m}\n`);
  assert.notEqual(piped.code, 0);
  assert.match(piped.stderr, /gatehouse: touching files is not allowed here \(rule "no-touch"\)/);
  assert.equal(existsSync(a), false);
  assert.equal(existsSync(m), false);

  // Chunks apart: the first line runs, a command split across chunks is judged whole.
  const since = await sessionIds();
  const s = startSsh(w.opts(), 'bash');
  s.child.stdin!.write(`echo one > ${a}\n`);
  const deadline = Date.now() + 10_000;
  while (!existsSync(a) && Date.now() < deadline) await sleep(20);
  assert.ok(existsSync(a), 'the allowed first line ran');
  s.child.stdin!.write('tou');
  await sleep(200);
  s.child.stdin!.write(`ch ${m}\necho after > ${a}\n`);
  const exit = await s.exited;
  assert.notEqual(exit.code, 0);
  assert.match(s.stderr(), /gatehouse: touching files is not allowed here/);
  assert.equal(existsSync(m), false, 'the split command did not run');
  assert.equal(readFileSync(a, 'utf8'), 'one\n', 'nothing after the refusal ran');
  const events = await sessionAfter(since);
  const denied = events.find((e) => e.type === 'ssh.stdin.denied')!;
  assert.match(String(denied.data.text), /^touch /);
  assert.equal((denied.data.policy as { rule: string }).rule, 'no-touch');

  // Allowed scripts run as before.
  const fine = await runSshRaw(w.opts(), 'sh', 'echo fine\n');
  assert.equal(fine.code, 0, fine.stderr);
  assert.equal(fine.stdout.toString(), 'fine\n');
});
