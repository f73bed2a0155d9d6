// Resumed SFTP transfers (`reget`, `reput`): only the rest of the file crosses the gateway, and
// the recording says how much did and from where, not the whole file's size.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runSftp } from '../support/ssh-client.ts';
import { describeEvents, eventsOf, recordOne, startSshWorld, type Data, type Recording, type SshWorld } from './helpers.ts';

let w: SshWorld;

before(async () => {
  w = await startSshWorld();
});

after(async () => {
  await w?.stop();
});

const SIZE = 1024 * 1024 + 123;

function transfer(rec: Recording, op: string, path: string): Data {
  const ops = eventsOf(rec, 'file.op').filter((e) => e.data.op === op && e.data.path === path);
  assert.equal(ops.length, 1, describeEvents(rec));
  return ops[0]!.data;
}

describe('resumed sftp transfers through the gateway', () => {
  it('reget records the bytes it transferred and where it resumed', async () => {
    const content = randomBytes(SIZE);
    const remote = join(w.work, 'reget-remote.bin'); // the target is this machine
    const local = join(w.work, 'reget-local.bin');
    const have = 300_000;
    writeFileSync(remote, content);
    writeFileSync(local, content.subarray(0, have));
    const { rec, result } = await recordOne(w.gw, () => runSftp(w.opts(), [`reget ${remote} ${local}`]));
    assert.equal(result.code, 0, result.stderr);
    assert.ok(readFileSync(local).equals(content), 'the download was completed');
    const op = transfer(rec, 'download', remote);
    assert.deepEqual({ size: op.size, resumedFrom: op.resumedFrom, endOffset: op.endOffset, sha256: op.sha256, status: op.status },
      { size: SIZE - have, resumedFrom: have, endOffset: SIZE, sha256: null, status: 'ok' });
  });

  it('reput records the bytes it transferred and where it resumed', async () => {
    const content = randomBytes(SIZE);
    const local = join(w.work, 'reput-local.bin');
    const remote = join(w.work, 'reput-remote.bin');
    const have = 400_000;
    writeFileSync(local, content);
    writeFileSync(remote, content.subarray(0, have));
    const { rec, result } = await recordOne(w.gw, () => runSftp(w.opts(), [`reput ${local} ${remote}`]));
    assert.equal(result.code, 0, result.stderr);
    assert.ok(readFileSync(remote).equals(content), 'the upload was completed');
    const op = transfer(rec, 'upload', remote);
    assert.deepEqual({ size: op.size, resumedFrom: op.resumedFrom, sha256: op.sha256, status: op.status },
      { size: SIZE - have, resumedFrom: have, sha256: null, status: 'ok' });
  });

  it('a whole get still records the whole size with its hash', async () => {
    const content = randomBytes(SIZE);
    const remote = join(w.work, 'get-remote.bin');
    writeFileSync(remote, content);
    const { rec, result } = await recordOne(w.gw, () => runSftp(w.opts(), [`get ${remote} ${join(w.work, 'get-local.bin')}`]));
    assert.equal(result.code, 0, result.stderr);
    const op = transfer(rec, 'download', remote);
    assert.equal(op.size, SIZE);
    assert.equal(op.resumedFrom, undefined);
    assert.equal(typeof op.sha256, 'string');
  });
});
