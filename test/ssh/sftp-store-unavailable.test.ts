// SFTP changes that do not look like uploads still wait for their record: with the recording
// store's disk full, an OPEN that truncates (CREAT|TRUNC, no WRITE) and an FSETSTAT chmod on open
// SFTP channels never reach the target; the channel is closed with a message, and once the store
// is back the recording holds each request and says it was not delivered.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { mountSmallDisk, type SmallDisk } from '../support/small-disk.ts';
import { startTestGateway, type TestGateway } from '../support/gateway.ts';
import { generateClientKey, startSshd, type ClientKey, type Sshd } from '../support/sshd.ts';
import { describeEvents, eventsOf, newRecordings, sessionIds, sleep, type Recording } from './helpers.ts';
import { FXF, FXP, RawSftp, attrs, str, u32 } from './raw-sftp.ts';

let disk: SmallDisk;
let gw: TestGateway;
let sshd: Sshd;
let key: ClientKey;
let work = '';

before(async () => {
  disk = mountSmallDisk('gatehouse-sftp-full-');
  // A writer whose every commit needs free space (see test/integrity/store-unavailable.test.ts).
  gw = await startTestGateway({ dataDir: disk.dataDir, env: { GATEHOUSE_RECORD_WRITER: 'inline' } });
  sshd = await startSshd();
  work = mkdtempSync(path.join(tmpdir(), 'gatehouse-sftp-full-'));
  chmodSync(work, 0o755);
  key = await generateClientKey(work, 'ed25519', 'writer');
  await gw.cliOk(['identity', 'add', 'writer', '--kind', 'agent']);
  await gw.cliOk(['key', 'add', 'writer', `${key.privateKeyFile}.pub`]);
  await gw.cliOk(['connection', 'add', 'box', '--type', 'ssh', '--host', sshd.host, '--port', String(sshd.port), '--user', sshd.user,
    '--key-file', sshd.clientKeyFile, '--host-key', sshd.hostKeyPublic]);
  await gw.cliOk(['grant', 'writer', 'box']);
});

after(async () => {
  await gw?.stop();
  await sshd?.stop();
  disk?.unmount();
  if (work) rmSync(work, { recursive: true, force: true });
});

test('with the store full, a truncating OPEN and an FSETSTAT chmod are refused before the target sees them, and recorded as undelivered', async () => {
  const victim = path.join(work, 'keep-my-content.txt');
  writeFileSync(victim, 'content that must survive\n');
  const guarded = path.join(work, 'keep-my-mode.txt');
  writeFileSync(guarded, 'x');
  chmodSync(guarded, 0o644);
  const beforeIds = await sessionIds(gw);
  // Both channels are open (and the FSETSTAT's handle too) while the store works.
  const truncating = await RawSftp.connect({ port: gw.sshPort, user: 'box', privateKeyFile: key.privateKeyFile });
  const chmodding = await RawSftp.connect({ port: gw.sshPort, user: 'box', privateKeyFile: key.privateKeyFile });
  const handle = await chmodding.open(guarded, FXF.READ);
  let truncateReply, chmodReply;
  disk.fill();
  try {
    truncateReply = await Promise.race([truncating.requestOrClose(FXP.OPEN, str(victim), u32(FXF.CREAT | FXF.TRUNC), attrs()), sleep(15_000).then(() => 'timeout' as const)]);
    chmodReply = await Promise.race([chmodding.requestOrClose(FXP.FSETSTAT, str(handle), attrs(0o600)), sleep(15_000).then(() => 'timeout' as const)]);
    await sleep(300); // had either been forwarded, the target would have acted by now
    assert.equal(readFileSync(victim, 'utf8'), 'content that must survive\n', 'the truncating open never reached the target');
    assert.equal((statSync(guarded).mode & 0o777).toString(8), '644', 'the chmod never reached the target');
  } finally {
    disk.free();
    truncating.end();
    chmodding.end();
  }
  assert.equal(truncateReply, null, 'the channel was closed instead of answering the open');
  assert.equal(chmodReply, null, 'the channel was closed instead of answering the fsetstat');
  for (const c of [truncating, chmodding]) assert.match(c.stderr, /gatehouse: the gateway cannot record right now; closing this channel/);

  // Once the store is back, both sessions are whole: the request, then why it never ran.
  const recs = await newRecordings(gw, beforeIds, 2, 30_000);
  const events = recs.flatMap((r: Recording) => r.events);
  const all = recs.map(describeEvents).join('\n---\n');
  const open = eventsOf(events, 'file.open').filter((e) => e.data.path === victim);
  assert.equal(open.length, 1, all);
  assert.deepEqual({ mode: open[0]!.data.mode, flags: open[0]!.data.flags }, { mode: 'truncate', flags: ['creat', 'trunc'] });
  const fset = eventsOf(events, 'file.request').filter((e) => e.data.op === 'fsetstat');
  assert.equal(fset.length, 1, all);
  assert.deepEqual({ path: fset[0]!.data.path, attrs: fset[0]!.data.attrs }, { path: guarded, attrs: { mode: '0600' } });
  for (const rec of recs) {
    const undelivered = eventsOf(rec, 'ssh.input.undelivered');
    assert.ok(undelivered.some((e) => e.data.reason === 'its record could not be committed'), describeEvents(rec));
    assert.ok(!eventsOf(rec, 'file.op').some((e) => e.data.op === 'truncate' || e.data.op === 'fsetstat'), 'no outcome: neither ran');
  }
  const verify = await gw.cli(['verify', '--store', '--data-dir', gw.dataDir]);
  assert.equal(verify.code, 0, verify.stdout + verify.stderr);
});
