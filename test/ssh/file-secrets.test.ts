// Secrets in transferred files (issue 15 item 3): scp and SFTP content is never rewritten, but the
// detectors read it as it passes and the file's record names which detectors found how many
// secrets — never the values. A file without secrets gets no such field; only the first 4 MiB
// of a file are read, and the record says so for a longer one. Real ssh/scp/sftp and sshd.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runScp, runSftp } from '../support/ssh-client.ts';
import { eventsOf, recordOne, startSshWorld, type Data, type SshWorld } from './helpers.ts';

let w: SshWorld;
const AWS_KEY = 'AKIA' + 'Q3EXAMPLEZ7K2M4P';
const GH_TOKEN = 'ghp_' + 'a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8';

before(async () => {
  w = await startSshWorld();
});
after(async () => {
  await w?.stop();
});

const fileOps = (rec: Parameters<typeof eventsOf>[0]) => eventsOf(rec, 'file.op').map((e) => e.data as Data);

test('scp and SFTP transfers of a file holding secrets arrive unchanged and are recorded with what the detectors found', async () => {
  const secretFile = join(w.work, 'creds.txt');
  const content = `aws_access_key_id = ${AWS_KEY}\n${'filler line\n'.repeat(5000)}token ${GH_TOKEN}\nagain ${AWS_KEY}\n`;
  writeFileSync(secretFile, content);
  const plainFile = join(w.work, 'plain.txt');
  writeFileSync(plainFile, 'nothing secret here\n'.repeat(100));

  for (const legacy of [true, false]) {
    const { rec } = await recordOne(w.gw, async () => {
      const r = await runScp(w.opts(), [...(legacy ? ['-O'] : []), secretFile, plainFile, `remote:${w.work}/`]);
      assert.equal(r.code, 0, r.stderr);
    });
    const ops = fileOps(rec).filter((d) => d.op === 'upload' || d.op === 'write');
    const creds = ops.find((d) => String(d.path).endsWith('creds.txt'))!;
    const plain = ops.find((d) => String(d.path).endsWith('plain.txt'))!;
    assert.ok(creds && plain, JSON.stringify(ops));
    assert.deepEqual(creds.secretsFound, [{ detector: 'aws', count: 2 }, { detector: 'github', count: 1 }], `${legacy ? 'scp -O' : 'scp (SFTP)'}: ${JSON.stringify(creds)}`);
    assert.equal(plain.secretsFound, undefined);
    assert.ok(!JSON.stringify(rec.events).includes(AWS_KEY.slice(4)) && !JSON.stringify(rec.events).includes(GH_TOKEN.slice(4)), 'no value in the record');
  }
  assert.equal(readFileSync(join(w.work, 'creds.txt'), 'utf8'), content);

  // A download through sftp is read the same way.
  const dest = join(w.work, 'fetched.txt');
  const { rec } = await recordOne(w.gw, async () => {
    const r = await runSftp(w.opts(), [`get ${secretFile} ${dest}`]);
    assert.equal(r.code, 0, r.stderr);
  });
  assert.equal(readFileSync(dest, 'utf8'), content, 'downloaded unchanged');
  const read = fileOps(rec).find((d) => String(d.path).endsWith('creds.txt'))!;
  assert.deepEqual(read.secretsFound, [{ detector: 'aws', count: 2 }, { detector: 'github', count: 1 }], JSON.stringify(fileOps(rec)));
});

test('only the first 4 MiB of a file are read by the detectors; the record says how much', async () => {
  const big = join(w.work, 'big.bin');
  writeFileSync(big, Buffer.concat([randomBytes(5 * 1024 * 1024).map((b) => 0x61 + (b % 26)), Buffer.from(`\n${AWS_KEY}\n`)]));
  const { rec } = await recordOne(w.gw, async () => {
    const r = await runScp(w.opts(), ['-O', big, `remote:${w.work}/big-copy.bin`]);
    assert.equal(r.code, 0, r.stderr);
  });
  const op = fileOps(rec).find((d) => String(d.path).endsWith('big-copy.bin'))!;
  assert.equal(op.secretsScannedBytes, 4 * 1024 * 1024, JSON.stringify(op));
  assert.equal(op.secretsFound, undefined, 'the key after 4 MiB was not read (a documented bound)');
});
