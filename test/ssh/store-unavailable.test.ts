// Fail closed over SSH: when the recording store cannot write (its disk is full), a command on an
// open connection is refused with a message and never reaches the target, new connections are
// refused, and once the store works again the recording is whole and verifies.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { mountSmallDisk, type SmallDisk } from '../support/small-disk.ts';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startTestGateway, type TestGateway } from '../support/gateway.ts';
import { generateClientKey, startSshd, type ClientKey, type Sshd } from '../support/sshd.ts';
import { api, type Recording } from '../support/recordings.ts';
import { runSshRaw, sleep, startSsh } from './helpers.ts';
import { connect, createServer } from 'node:net';
import { freePort } from '../support/pg-cluster.ts';
import type { SessionView } from '../../src/cli/format.ts';

let disk: SmallDisk;
let gw: TestGateway;
let sshd: Sshd;
let key: ClientKey;
let control: string;

before(async () => {
  disk = mountSmallDisk('gatehouse-ssh-full-');
  // A writer whose every commit needs free space (see test/integrity/store-unavailable.test.ts).
  gw = await startTestGateway({ dataDir: disk.dataDir, env: { GATEHOUSE_RECORD_WRITER: 'inline' } });
  sshd = await startSshd();
  const work = mkdtempSync(path.join(tmpdir(), 'gatehouse-ssh-full-keys-'));
  key = await generateClientKey(work, 'ed25519', 'writer');
  control = path.join(work, 'control');
  await gw.cliOk(['identity', 'add', 'writer', '--kind', 'agent']);
  await gw.cliOk(['key', 'add', 'writer', `${key.privateKeyFile}.pub`]);
  await gw.cliOk(['connection', 'add', 'box', '--type', 'ssh', '--host', sshd.host, '--port', String(sshd.port), '--user', sshd.user,
    '--key-file', sshd.clientKeyFile, '--host-key', sshd.hostKeyPublic]);
  await gw.cliOk(['grant', 'writer', 'box']);
});

after(async () => {
  try { execFileSync('ssh', ['-o', `ControlPath=${control}`, '-O', 'exit', 'box@127.0.0.1'], { stdio: 'ignore' }); } catch { /* not running */ }
  await gw?.stop();
  await sshd?.stop();
  disk?.unmount();
});

/** Every command of the test rides one SSH connection (OpenSSH connection sharing), opened before the disk fills. */
const shared = (command: string) => runSshRaw({
  port: gw.sshPort, user: 'box', identityFile: key.privateKeyFile,
  extra: ['-o', 'ControlMaster=auto', '-o', `ControlPath=${control}`, '-o', 'ControlPersist=60'],
}, command);

test('with the store full, a command on an open connection is refused, never runs, and the recording says so once the store is back', async () => {
  const marker = path.join(tmpdir(), `gatehouse-ssh-full-marker-${process.pid}`);
  rmSync(marker, { force: true });
  const first = await shared('echo recorded');
  assert.equal(first.code, 0, first.stderr);
  assert.equal(first.stdout.toString(), 'recorded\n');

  disk.fill();
  try {
    const refused = await shared(`touch ${marker}`);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /gatehouse: the gateway cannot record right now; nothing was sent to the target/);
    assert.equal(existsSync(marker), false, 'the refused command did not run on the target');

    // A new connection cannot be recorded either: refused on its first channel.
    const fresh = await runSshRaw({ port: gw.sshPort, user: 'box', identityFile: key.privateKeyFile }, 'true');
    assert.notEqual(fresh.code, 0);
    assert.match(fresh.stderr, /gatehouse: the gateway cannot record sessions right now/);
  } finally {
    disk.free();
  }

  // The store recovers (failed batches are retried) and the shared connection works again.
  let again = await shared('echo back');
  for (let i = 0; i < 20 && again.code !== 0; i++) {
    await new Promise((r) => setTimeout(r, 250));
    again = await shared('echo back');
  }
  assert.equal(again.code, 0, again.stderr);
  assert.equal(again.stdout.toString(), 'back\n');
  execFileSync('ssh', ['-o', `ControlPath=${control}`, '-O', 'exit', 'box@127.0.0.1'], { stdio: 'ignore' });

  // The session's recording holds the refused command, marked as refused, between the two that ran.
  const deadline = Date.now() + 15_000;
  let rec: Recording | undefined;
  for (;;) {
    const sessions = await api<SessionView[]>(gw, '/api/v1/sessions?limit=100');
    const s = sessions.find((x) => x.identity.name === 'writer' && x.endedAt !== null && x.eventCount > 4);
    if (s) rec = await api<Recording>(gw, `/api/v1/sessions/${s.id}`);
    if (rec || Date.now() > deadline) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  assert.ok(rec, 'the shared connection was recorded and ended');
  const commands = rec.events.filter((e) => e.type === 'ssh.exec').map((e) => String(e.data.command));
  assert.deepEqual(commands, ['echo recorded', `touch ${marker}`, 'echo back']);
  const refusedCh = rec.events.find((e) => e.type === 'ssh.exec' && String(e.data.command).startsWith('touch'))!.data.ch;
  assert.ok(rec.events.some((e) => e.type === 'ssh.channel.refused' && e.data.ch === refusedCh), 'the refusal is on record');
  assert.ok(!rec.events.some((e) => e.type === 'ssh.exit' && e.data.ch === refusedCh), 'no exit: it never ran');

  const verify = await gw.cli(['verify', '--store', '--data-dir', gw.dataDir]);
  assert.equal(verify.code, 0, verify.stdout + verify.stderr);
});

/**
 * A shell on its own connection (`ssh -tt`, input from a pipe) runs `setup` while the store
 * works (it prints READY-42 when set); then the disk fills and `typed` is sent. Returns what the target got, the client's
 * end, and (once the store is back) the session's recording.
 */
async function typeWhileFull(setup: string, typed: string, result: string): Promise<{ got: string; exit: { code: number | null }; stderr: string; rec: Recording }> {
  const before = new Set((await api<SessionView[]>(gw, '/api/v1/sessions?limit=1000')).map((s) => s.id));
  rmSync(result, { force: true });
  const shell = startSsh({ port: gw.sshPort, user: 'box', identityFile: key.privateKeyFile, extra: ['-tt'] });
  let exit: { code: number | null };
  let got: string;
  try {
    shell.child.stdin!.write(`stty -echo; ${setup}\n`);
    await shell.waitForStdout('READY-42');
    disk.fill();
    try {
      shell.child.stdin!.write(typed);
      exit = await Promise.race([shell.exited, sleep(10_000).then(() => ({ code: -1 }))]);
      await sleep(300); // had the input been forwarded, the target would have acted on it by now
      got = existsSync(result) ? readFileSync(result, 'utf8') : '';
    } finally {
      disk.free();
    }
  } finally {
    await shell.stop();
  }
  const deadline = Date.now() + 15_000;
  for (;;) {
    const s = (await api<SessionView[]>(gw, '/api/v1/sessions?limit=1000')).find((x) => !before.has(x.id) && x.endedAt !== null);
    if (s) return { got, exit, stderr: shell.stderr(), rec: await api<Recording>(gw, `/api/v1/sessions/${s.id}`) };
    assert.ok(Date.now() < deadline, 'the shell session was recorded and ended once the store was back');
    await sleep(200);
  }
}

/** The input events of the recording in order, with the undelivered follow-ups. */
const inputTrail = (rec: Recording) => rec.events.filter((e) => e.type === 'term.in' || e.type === 'ssh.input.undelivered')
  .map((e) => (e.type === 'term.in' ? `in:${String(e.data.d)}` : `undelivered:${String(e.data.bytes)}`));

test('with the store full, a line typed on an open shell never runs, and is recorded as typed and not delivered', async () => {
  const marker = path.join(tmpdir(), `gatehouse-ssh-full-typed-${process.pid}`);
  const r = await typeWhileFull('echo READY-$((40+2))', `echo ran > ${marker}\n`, marker);
  assert.equal(r.got, '', 'the typed line never reached the target');
  assert.equal(r.exit.code, 255, `the gateway closed the channel: ${r.stderr}`);
  assert.match(r.stderr, /gatehouse: the gateway cannot record right now; closing this channel/);
  const trail = inputTrail(r.rec);
  assert.deepEqual(trail.slice(-2), [`in:echo ran > ${marker}\n`, `undelivered:${`echo ran > ${marker}\n`.length}`], trail.join(' | '));
  const verify = await gw.cli(['verify', '--store', '--data-dir', gw.dataDir]);
  assert.equal(verify.code, 0, verify.stdout + verify.stderr);
});

test('with the store full, a single raw-mode keystroke (no Enter) is not forwarded: keystrokes are durable before the target sees them', async () => {
  const keyFile = path.join(tmpdir(), `gatehouse-ssh-full-key-${process.pid}`);
  // Non-canonical mode, as vim or a y/n prompt reads: one byte is enough for the program to act.
  const r = await typeWhileFull(`stty -icanon min 1; echo READY-$((40+2)); head -c 1 > ${keyFile}; echo GOT-KEY`, 'Z', keyFile);
  assert.equal(r.got, '', 'the keystroke never reached the target');
  assert.equal(r.exit.code, 255, r.stderr);
  assert.deepEqual(inputTrail(r.rec).slice(-2), ['in:Z', 'undelivered:1']);
  rmSync(keyFile, { force: true });
});

test('with the store full, a forwarded connection (-L) is not opened to its destination, and the recording says why once the store is back', async () => {
  await gw.cliOk(['connection', 'add', 'box-fwd', '--type', 'ssh', '--host', sshd.host, '--port', String(sshd.port), '--user', sshd.user,
    '--key-file', sshd.clientKeyFile, '--host-key', sshd.hostKeyPublic, '--allow-forwarding', 'local']);
  await gw.cliOk(['grant', 'writer', 'box-fwd']);
  let arrived = 0;
  const dest = createServer((s) => { arrived++; s.pipe(s); });
  await new Promise<void>((r) => dest.listen(0, '127.0.0.1', () => r()));
  const destPort = (dest.address() as { port: number }).port;
  const lport = await freePort();
  const before = new Set((await api<SessionView[]>(gw, '/api/v1/sessions?limit=1000')).map((s) => s.id));
  const ssh = startSsh({ port: gw.sshPort, user: 'box-fwd', identityFile: key.privateKeyFile, extra: ['-N', '-L', `127.0.0.1:${lport}:127.0.0.1:${destPort}`] });
  /** One connection through the forward: what came back before it closed (or a timeout). */
  const through = (payload: string) => new Promise<string>((resolve) => {
    const s = connect({ port: lport, host: '127.0.0.1' });
    let got = '';
    s.on('connect', () => s.write(payload));
    s.on('data', (d: Buffer) => { got += d.toString(); if (got === payload) s.end(); });
    s.on('error', () => resolve(got));
    s.on('close', () => resolve(got));
    setTimeout(() => { s.destroy(); resolve(got); }, 5000).unref();
  });
  try {
    let first = '';
    for (let i = 0; i < 50 && first !== 'ping\n'; i++) { first = await through('ping\n'); if (first !== 'ping\n') await sleep(100); }
    assert.equal(first, 'ping\n', 'the forward works while the store does');
    const reached = arrived;
    disk.fill();
    try {
      assert.equal(await through('while full\n'), '', 'nothing came back');
      assert.equal(arrived, reached, 'the destination never saw the connection');
    } finally {
      disk.free();
    }
  } finally {
    await ssh.stop();
    await new Promise<void>((r) => dest.close(() => r()));
  }
  const deadline = Date.now() + 15_000;
  let rec: Recording | undefined;
  while (!rec) {
    const s = (await api<SessionView[]>(gw, '/api/v1/sessions?limit=1000')).find((x) => !before.has(x.id) && x.endedAt !== null);
    if (s) rec = await api<Recording>(gw, `/api/v1/sessions/${s.id}`);
    else { assert.ok(Date.now() < deadline, 'the forwarding session was recorded'); await sleep(200); }
  }
  const trail = rec.events.filter((e) => e.type.startsWith('ssh.forward')).map((e) => `${e.type}${e.data.message ? `: ${String(e.data.message)}` : ''}`);
  assert.equal(trail.filter((t) => t === 'ssh.forward').length, trail.filter((t) => t.startsWith('ssh.forward.closed')).length + 1, trail.join(' | '));
  assert.ok(trail.includes('ssh.forward.failed: the gateway cannot record right now; not opened'), trail.join(' | '));
});
