// File transfers through the gateway: sftp, scp (SFTP protocol, its default) and legacy scp
// (`scp -O`), both directions, with a 100 MB file: the content arrives intact and the recording
// states the same size and SHA-256; directory changes are recorded with their outcome; failed
// uploads are recorded as failed.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runScp, runSftp, type SshResult } from '../support/ssh-client.ts';
import { PASSWORD_USER } from '../support/sshd.ts';
import { run } from '../support/processes.ts';
import { describeEvents, eventsOf, oneEvent, recordOne, sha256File, startSshWorld, type Data, type Recording, type SshWorld } from './helpers.ts';

let w: SshWorld;
let big = '';
let bigHash = '';
let local = '';
let remote = '';
const SIZE = 100 * 1024 * 1024;
const LONG = 180_000;

before(async () => {
  w = await startSshWorld();
  local = join(w.work, 'local');
  remote = join(w.work, 'remote'); // the target is this machine: "remote" paths are local paths too
  mkdirSync(local);
  mkdirSync(remote);
  big = join(local, 'big.bin');
  const r = await run('sh', ['-c', `head -c ${SIZE} /dev/urandom > '${big}'`]);
  assert.equal(r.code, 0, r.stderr);
  bigHash = await sha256File(big);
});

after(async () => {
  await w?.stop();
});

function transferOk(r: SshResult, what: string): void {
  assert.equal(r.code, 0, `${what} failed (code ${r.code}):\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
}

/** The one file.op event of `op` on `path` (the path as the client sent it). */
function fileOp(rec: Recording, op: string, path: string): Data {
  const ops = eventsOf(rec, 'file.op').filter((e) => e.data.op === op && e.data.path === path);
  assert.equal(ops.length, 1, `one file.op ${op} ${path} expected, got ${ops.length}:\n${describeEvents(rec)}`);
  return ops[0]!.data;
}

async function assertSameFile(file: string): Promise<void> {
  assert.equal(statSync(file).size, SIZE, `${file} size`);
  assert.equal(await sha256File(file), bigHash, `${file} content`);
}

describe('file transfers through the gateway', () => {
  it('sftp put and get of a 100 MB file: intact, and recorded with size and SHA-256', async () => {
    const dest = join(remote, 'sftp-put.bin');
    const put = await recordOne(w.gw, () => runSftp({ ...w.opts(), timeoutMs: LONG }, [`put ${big} ${dest}`]));
    transferOk(put.result, 'sftp put');
    await assertSameFile(dest);
    const up = fileOp(put.rec, 'upload', dest);
    assert.deepEqual({ via: up.via, size: up.size, sha256: up.sha256, status: up.status }, { via: 'sftp', size: SIZE, sha256: bigHash, status: 'ok' });
    assert.equal(oneEvent(put.rec, 'ssh.subsystem').name, 'sftp');
    // The open for writing is on record before the upload's outcome.
    const open = eventsOf(put.rec, 'file.open').find((e) => e.data.path === dest);
    assert.ok(open, 'file.open recorded');
    assert.ok(open.seq < eventsOf(put.rec, 'file.op').find((e) => e.data.op === 'upload')!.seq);

    const back = join(local, 'sftp-get.bin');
    const get = await recordOne(w.gw, () => runSftp({ ...w.opts(), timeoutMs: LONG }, [`get ${dest} ${back}`]));
    transferOk(get.result, 'sftp get');
    await assertSameFile(back);
    const down = fileOp(get.rec, 'download', dest);
    assert.deepEqual({ via: down.via, size: down.size, sha256: down.sha256, status: down.status }, { via: 'sftp', size: SIZE, sha256: bigHash, status: 'ok' });
  });

  it('scp (SFTP protocol) both ways: intact and recorded', async () => {
    const dest = join(remote, 'scp-sftp.bin');
    const up = await recordOne(w.gw, () => runScp({ ...w.opts(), timeoutMs: LONG }, [big, `remote:${dest}`]));
    transferOk(up.result, 'scp upload');
    await assertSameFile(dest);
    const upOp = fileOp(up.rec, 'upload', dest);
    assert.deepEqual({ via: upOp.via, size: upOp.size, sha256: upOp.sha256, status: upOp.status }, { via: 'sftp', size: SIZE, sha256: bigHash, status: 'ok' });

    const back = join(local, 'scp-sftp-back.bin');
    const down = await recordOne(w.gw, () => runScp({ ...w.opts(), timeoutMs: LONG }, [`remote:${dest}`, back]));
    transferOk(down.result, 'scp download');
    await assertSameFile(back);
    const downOp = fileOp(down.rec, 'download', dest);
    assert.deepEqual({ via: downOp.via, size: downOp.size, sha256: downOp.sha256, status: downOp.status }, { via: 'sftp', size: SIZE, sha256: bigHash, status: 'ok' });
  });

  it('legacy scp (scp -O) both ways: intact and recorded', async () => {
    const dest = join(remote, 'scp-legacy.bin');
    const up = await recordOne(w.gw, () => runScp({ ...w.opts(), timeoutMs: LONG }, ['-O', big, `remote:${dest}`]));
    transferOk(up.result, 'scp -O upload');
    await assertSameFile(dest);
    const exec = oneEvent(up.rec, 'ssh.exec');
    assert.match(String(exec.command), /^scp .*-t .*scp-legacy\.bin$/);
    const upOp = fileOp(up.rec, 'upload', dest);
    assert.deepEqual({ via: upOp.via, size: upOp.size, sha256: upOp.sha256, status: upOp.status }, { via: 'scp', size: SIZE, sha256: bigHash, status: 'ok' });
    // File content is not kept as an output sample.
    assert.equal((oneEvent(up.rec, 'ssh.exit').stdout as Data).sample, undefined);

    const back = join(local, 'scp-legacy-back.bin');
    const down = await recordOne(w.gw, () => runScp({ ...w.opts(), timeoutMs: LONG }, ['-O', `remote:${dest}`, back]));
    transferOk(down.result, 'scp -O download');
    await assertSameFile(back);
    const downOp = fileOp(down.rec, 'download', dest);
    assert.deepEqual({ via: downOp.via, size: downOp.size, sha256: downOp.sha256, status: downOp.status }, { via: 'scp', size: SIZE, sha256: bigHash, status: 'ok' });
    const exit = oneEvent(down.rec, 'ssh.exit');
    assert.equal(exit.code, 0);
    assert.equal((exit.stdout as Data).sample, undefined, 'downloaded content is not sampled into the recording');
  });

  it('records mkdir, rename, remove and rmdir with their outcome', async () => {
    const dir = join(remote, 'ops');
    const small = join(local, 'small.txt');
    writeFileSync(small, 'small file\n');
    const { rec, result } = await recordOne(w.gw, () => runSftp(w.opts(), [
      `mkdir ${dir}`,
      `put ${small} ${dir}/a.txt`,
      `rename ${dir}/a.txt ${dir}/b.txt`,
      `rm ${dir}/b.txt`,
      `-rm ${dir}/never-existed.txt`,
      `-rename ${dir}/never-existed.txt ${dir}/c.txt`,
      `rmdir ${dir}`,
      `-rmdir ${join(remote, 'no-such-dir')}`,
    ]));
    transferOk(result, 'sftp batch');
    assert.equal(existsSync(dir), false, 'the directory is gone on the target');
    assert.equal(fileOp(rec, 'mkdir', dir).status, 'ok');
    const rename = fileOp(rec, 'rename', `${dir}/a.txt`);
    assert.equal(rename.to, `${dir}/b.txt`);
    assert.equal(rename.status, 'ok');
    assert.equal(fileOp(rec, 'remove', `${dir}/b.txt`).status, 'ok');
    assert.equal(fileOp(rec, 'rmdir', dir).status, 'ok');
    assert.match(String(fileOp(rec, 'remove', `${dir}/never-existed.txt`).status), /^no such file/);
    assert.match(String(fileOp(rec, 'rename', `${dir}/never-existed.txt`).status), /^no such file/);
    assert.match(String(fileOp(rec, 'rmdir', join(remote, 'no-such-dir')).status), /^no such file/);
    assert.equal(fileOp(rec, 'upload', `${dir}/a.txt`).status, 'ok');
    // Changes are on record (file.request) before their outcome.
    for (const op of eventsOf(rec, 'file.op').filter((e) => ['mkdir', 'rename', 'remove', 'rmdir'].includes(String(e.data.op)))) {
      const req = eventsOf(rec, 'file.request').find((r) => r.data.op === op.data.op && r.data.path === op.data.path);
      assert.ok(req && req.seq < op.seq, `file.request before file.op for ${op.data.op} ${op.data.path}`);
    }
  });

  it('legacy scp -r of a directory records each file where it landed', async () => {
    const tree = join(local, 'tree');
    mkdirSync(join(tree, 'sub'), { recursive: true });
    writeFileSync(join(tree, 'one.txt'), 'one\n');
    writeFileSync(join(tree, 'sub', 'two.txt'), 'two\n');
    const { rec, result } = await recordOne(w.gw, () => runScp(w.opts(), ['-O', '-r', tree, `remote:${remote}`]));
    transferOk(result, 'scp -O -r');
    for (const [rel, text] of [['tree/one.txt', 'one\n'], ['tree/sub/two.txt', 'two\n']] as const) {
      const landed = join(remote, rel);
      assert.ok(existsSync(landed), `${landed} exists`);
      const op = fileOp(rec, 'upload', landed);
      assert.equal(op.size, text.length);
      assert.equal(op.status, 'ok');
    }
  });

  it('legacy scp into an existing directory records the path where the file landed', async () => {
    // `scp -O FILE host:DIR` runs `scp -t DIR` on the target, which writes DIR/FILE.
    const dir = join(remote, 'into-dir');
    mkdirSync(dir);
    const small = join(local, 'landing.txt');
    writeFileSync(small, 'where did I land?\n');
    const { rec, result } = await recordOne(w.gw, () => runScp(w.opts(), ['-O', small, `remote:${dir}`]));
    transferOk(result, 'scp -O into a directory');
    assert.ok(existsSync(join(dir, 'landing.txt')));
    const ops = eventsOf(rec, 'file.op').map((e) => e.data);
    assert.equal(ops.length, 1, JSON.stringify(ops));
    assert.equal(ops[0]!.path, join(dir, 'landing.txt'), `recorded path ${String(ops[0]!.path)}`);
  });

  it('records a failed upload into a directory that does not exist (sftp and scp -O)', async () => {
    const small = join(local, 'small2.txt');
    writeFileSync(small, 'nowhere to go\n');
    const missing = join(remote, 'missing-dir', 'x.txt');
    const viaSftp = await recordOne(w.gw, () => runSftp(w.opts(), [`put ${small} ${missing}`]));
    assert.notEqual(viaSftp.result.code, 0, 'sftp reports the failure');
    assert.match(String(fileOp(viaSftp.rec, 'upload', missing).status), /^no such file/);

    const viaScp = await recordOne(w.gw, () => runScp(w.opts(), ['-O', small, `remote:${missing}`]));
    assert.notEqual(viaScp.result.code, 0, 'scp -O reports the failure');
    assert.match(viaScp.result.stderr, /No such file or directory/);
    const op = fileOp(viaScp.rec, 'upload', missing);
    assert.notEqual(op.status, 'ok', `recorded status: ${String(op.status)}`);
    assert.equal(op.sha256, null);
  });

  it('sftp -s /usr/lib/openssh/sftp-server (the server run as an exec) is tracked as SFTP: file operations with size and SHA-256', async () => {
    // The client sends `exec /usr/lib/openssh/sftp-server` instead of the sftp subsystem request.
    const small = join(local, 'exec-sftp.txt');
    writeFileSync(small, 'sftp over an exec channel\n');
    const dest = join(remote, 'exec-sftp.txt');
    const { rec, result } = await recordOne(w.gw, () => runSftp(w.opts({ extra: ['-s', '/usr/lib/openssh/sftp-server'] }), [`put ${small} ${dest}`, `rename ${dest} ${dest}.moved`]));
    transferOk(result, 'sftp -s put');
    assert.ok(existsSync(`${dest}.moved`));
    const exec = oneEvent(rec, 'ssh.exec');
    assert.equal(exec.command, '/usr/lib/openssh/sftp-server');
    assert.equal(exec.protocol, 'sftp');
    const up = fileOp(rec, 'upload', dest);
    assert.deepEqual({ via: up.via, size: up.size, sha256: up.sha256, status: up.status },
      { via: 'sftp', size: 26, sha256: await sha256File(small), status: 'ok' });
    assert.equal(fileOp(rec, 'rename', dest).status, 'ok');
  });

  it('records an upload the target user may not write as permission denied', async (t) => {
    if (w.sshd.passwordLogin === undefined) return t.skip(w.sshd.passwordSkipReason);
    // A second connection logs in as the unprivileged test user (the shared authorized_keys admits it).
    await w.gw.cliOk(['connection', 'add', 'box-user', '--type', 'ssh', '--host', w.sshd.host, '--port', String(w.sshd.port),
      '--user', PASSWORD_USER, '--key-file', w.sshd.clientKeyFile, '--host-key', w.sshd.hostKeyPublic]);
    await w.gw.cliOk(['grant', 'alice', 'box-user']);
    chmodSync(w.work, 0o755);
    const readonly = join(w.work, 'readonly');
    mkdirSync(readonly, { mode: 0o755 });
    const small = join(local, 'small3.txt');
    writeFileSync(small, 'not allowed\n');
    chmodSync(local, 0o755);
    chmodSync(small, 0o644);
    const dest = join(readonly, 'denied.txt');
    const { rec, result } = await recordOne(w.gw, () => runSftp(w.opts({ connection: 'box-user' }), [`put ${small} ${dest}`]));
    assert.notEqual(result.code, 0);
    assert.match(result.stderr, /Permission denied/i);
    assert.equal(existsSync(dest), false);
    assert.equal(rec.session.target.user, PASSWORD_USER);
    assert.match(String(fileOp(rec, 'upload', dest).status), /^permission denied/);
  });
});
