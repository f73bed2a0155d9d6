// SFTP requests the OpenSSH client rarely or never sends, through the gateway to a real sshd
// (internal-sftp, OpenSSH's sftp-server): opens that truncate or create without WRITE, FSETSTAT,
// server-side copies and links, unknown extensions, thousands of handles with out-of-order
// writes, malformed packets and a target that answers an SFTP version the tracker cannot read.
// Each one is recorded as the change it is, or the channel is closed and the recording says why.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdirSync, readFileSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runSftp } from '../support/ssh-client.ts';
import { describeEvents, eventsOf, oneEvent, recordOne, sha256, sleep, startSshWorld, type Data, type Recording, type SshWorld } from './helpers.ts';
import { FXF, FXP, RawSftp, attrs, packet, statusCode, statusOf, str, u32, u64 } from './raw-sftp.ts';

let w: SshWorld;
let dir = '';

before(async () => {
  w = await startSshWorld();
  dir = join(w.work, 'remote'); // the target is this machine: its paths are local paths too
  mkdirSync(dir);
});

after(async () => {
  await w?.stop();
});

const raw = (o: { exec?: string; skipInit?: boolean } = {}) => RawSftp.connect({ port: w.gw.sshPort, user: 'box', privateKeyFile: w.key.privateKeyFile, ...o });

/** Runs `fn` on a fresh raw SFTP connection, ends it, and returns the session's recording. */
async function rawSession(fn: (c: RawSftp) => Promise<void>, o: { exec?: string; skipInit?: boolean } = {}): Promise<Recording> {
  const { rec } = await recordOne(w.gw, async () => {
    const c = await raw(o);
    try {
      await fn(c);
    } finally {
      c.end();
    }
  });
  return rec;
}

function only(rec: Recording, type: string, pred: (d: Data) => boolean): { seq: number; data: Data } {
  const found = eventsOf(rec, type).filter((e) => pred(e.data));
  assert.equal(found.length, 1, `one ${type} expected, got ${found.length}:\n${describeEvents(rec)}`);
  return found[0]!;
}

const modeOf = (file: string) => (statSync(file).mode & 0o7777).toString(8);

function gatewayRssMiB(): number {
  const status = readFileSync(`/proc/${w.gw.process.pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)![1]) / 1024;
}

describe('hostile SFTP sequences through the gateway', () => {
  it('OPEN with CREAT|TRUNC and no WRITE truncates the file: recorded as truncate before it is forwarded, not as a download', async () => {
    const file = join(dir, 'truncated.txt');
    writeFileSync(file, 'precious content\n');
    const rec = await rawSession(async (c) => {
      const h = await c.open(file, FXF.CREAT | FXF.TRUNC);
      assert.equal((await c.close(h)).type, FXP.STATUS);
    });
    assert.equal(statSync(file).size, 0, 'the target truncated the file');
    const open = only(rec, 'file.open', (d) => d.path === file);
    assert.equal(open.data.mode, 'truncate');
    assert.deepEqual(open.data.flags, ['creat', 'trunc']);
    const op = only(rec, 'file.op', (d) => d.path === file);
    assert.equal(op.data.op, 'truncate');
    assert.equal(op.data.status, 'ok');
    assert.ok(open.seq < op.seq, 'on record before its outcome');
    assert.equal(eventsOf(rec, 'file.op').filter((e) => e.data.op === 'download').length, 0, describeEvents(rec));
  });

  it('OPEN with CREAT alone creates the file: recorded as create, with the permissions it asked for', async () => {
    const file = join(dir, 'created.txt');
    const rec = await rawSession(async (c) => {
      await c.close(await c.open(file, FXF.READ | FXF.CREAT | FXF.EXCL, 0o600));
    });
    assert.ok(existsSync(file), 'the target created the file');
    const open = only(rec, 'file.open', (d) => d.path === file);
    assert.deepEqual({ mode: open.data.mode, flags: open.data.flags, attrs: open.data.attrs }, { mode: 'create', flags: ['read', 'creat', 'excl'], attrs: { mode: '0600' } });
    assert.equal(only(rec, 'file.op', (d) => d.path === file).data.op, 'create');
  });

  it('FSETSTAT (chmod through a handle) is recorded with the path and mode, before it is forwarded', async () => {
    const file = join(dir, 'fsetstat.txt');
    writeFileSync(file, 'x');
    chmodSync(file, 0o644);
    const rec = await rawSession(async (c) => {
      const h = await c.open(file, FXF.READ);
      const r = await c.request(FXP.FSETSTAT, str(h), attrs(0o600));
      assert.equal(statusCode(r), 0, statusOf(r));
      await c.close(h);
    });
    assert.equal(modeOf(file), '600', 'the target changed the mode');
    const req = only(rec, 'file.request', (d) => d.op === 'fsetstat');
    assert.deepEqual({ path: req.data.path, attrs: req.data.attrs }, { path: file, attrs: { mode: '0600' } });
    const op = only(rec, 'file.op', (d) => d.op === 'fsetstat');
    assert.deepEqual({ path: op.data.path, status: op.data.status }, { path: file, status: 'ok' });
    assert.ok(req.seq < op.seq);
  });

  it('sftp put -p (FSETSTAT of the upload), chmod, ln, ln -s, cp and df: changes recorded with their arguments, reads not', async () => {
    const local = join(w.work, 'put-p.txt');
    writeFileSync(local, 'preserved\n');
    chmodSync(local, 0o640);
    const dest = join(dir, 'put-p.txt');
    const { rec, result } = await recordOne(w.gw, () => runSftp(w.opts(), [
      `put -p ${local} ${dest}`,
      `chmod 604 ${dest}`,
      `ln ${dest} ${dest}.hard`,
      `ln -s ${dest} ${dest}.soft`,
      `cp ${dest} ${dest}.copy`,
      `df ${dir}`,
    ]));
    assert.equal(result.code, 0, result.stderr);
    assert.equal(readFileSync(`${dest}.copy`, 'utf8'), 'preserved\n');
    const fset = only(rec, 'file.request', (d) => d.op === 'fsetstat');
    assert.equal(fset.data.path, dest);
    assert.equal((fset.data.attrs as Data).mode, '0640', JSON.stringify(fset.data));
    assert.equal(typeof (fset.data.attrs as Data).mtime, 'number', 'put -p sets the times too');
    assert.equal(only(rec, 'file.op', (d) => d.op === 'fsetstat').data.status, 'ok');
    assert.deepEqual(only(rec, 'file.request', (d) => d.op === 'setstat').data.attrs, { mode: '0604' });
    assert.equal(only(rec, 'file.op', (d) => d.op === 'hardlink').data.to, `${dest}.hard`);
    assert.equal(only(rec, 'file.op', (d) => d.op === 'symlink').data.status, 'ok');
    const copy = only(rec, 'file.request', (d) => d.op === 'copy-data');
    assert.deepEqual({ path: copy.data.path, from: copy.data.from }, { path: `${dest}.copy`, from: dest });
    assert.equal(only(rec, 'file.op', (d) => d.op === 'copy-data').data.status, 'ok');
    // The copy's content never crossed the gateway: its "upload" has no hash, and says why.
    const copied = only(rec, 'file.op', (d) => d.op === 'upload' && d.path === `${dest}.copy`);
    assert.equal(copied.data.sha256, null);
    assert.match(String(copied.data.hashNote), /copy-data/);
    // df (statvfs@openssh.com) only reads: no record of its own.
    assert.ok(!eventsOf(rec, 'file.request').some((e) => e.data.op === 'extended'), describeEvents(rec));
  });

  it('an unknown extended request is recorded (and gated) as a change of unknown effect before it is forwarded', async () => {
    const rec = await rawSession(async (c) => {
      const r = await c.request(FXP.EXTENDED, str('wipe-everything@example.com'), str('/'));
      assert.equal(statusCode(r), 8, `the target does not support it: ${statusOf(r)}`);
      // A request type that is not version 3 at all: recorded too (OpenSSH's server ignores it, no reply).
      await c.write(c.build(42, str('/')).bytes);
      assert.equal((await c.request(FXP.REALPATH, str('/'))).type, FXP.NAME);
    });
    const req = only(rec, 'file.request', (d) => d.op === 'extended');
    assert.equal(req.data.name, 'wipe-everything@example.com');
    const op = only(rec, 'file.op', (d) => d.op === 'extended');
    assert.equal(op.data.name, 'wipe-everything@example.com');
    assert.match(String(op.data.status), /^unsupported/);
    assert.ok(req.seq < op.seq);
    assert.equal(only(rec, 'file.request', (d) => d.op === 'unknown').data.type, 42);
  });

  it('a malformed packet closes the channel: recorded as sftp.closed, and nothing of its chunk reaches the target', async () => {
    const made = join(dir, 'made-before-the-bad-packet');
    let stderr = '';
    let closed: { code: number | null } = { code: null };
    const rec = await rawSession(async (c) => {
      // A valid MKDIR, then an OPEN whose path string runs past the end of its packet, in one write.
      const mkdir = c.build(FXP.MKDIR, str(made), attrs());
      const bad = packet(FXP.OPEN, u32(999), u32(1000), Buffer.from('/etc/'));
      await c.write(Buffer.concat([mkdir.bytes, bad]));
      closed = await Promise.race([c.closed, sleep(10_000).then(() => ({ code: -1 }))]);
      stderr = c.stderr;
    });
    assert.equal(closed.code, 255, `the gateway closed the channel; stderr: ${stderr}`);
    assert.match(stderr, /gatehouse: malformed SFTP from the client \(SFTP string runs past the packet\); closing this channel/);
    assert.equal(existsSync(made), false, 'the chunk holding the malformed packet was not forwarded');
    const why = oneEvent(rec, 'sftp.closed');
    assert.deepEqual({ from: why.from, reason: why.reason }, { from: 'client', reason: 'malformed SFTP from the client (SFTP string runs past the packet)' });
    // The MKDIR before it is on record, and so is the fact that it never reached the target.
    only(rec, 'file.request', (d) => d.op === 'mkdir' && d.path === made);
    const undelivered = eventsOf(rec, 'ssh.input.undelivered');
    assert.equal(undelivered.length, 1, describeEvents(rec));
    assert.match(String(undelivered[0]!.data.reason), /the gateway closed the channel: malformed SFTP/);
    assert.ok(!eventsOf(rec, 'file.op').some((e) => e.data.op === 'mkdir'), 'no outcome: it never ran');
  });

  it('a packet length out of range closes the channel too, and the gateway goes on serving', async () => {
    let stderr = '';
    const rec = await rawSession(async (c) => {
      await c.write(Buffer.concat([u32(0), Buffer.from([FXP.STAT])]));
      await Promise.race([c.closed, sleep(10_000)]);
      stderr = c.stderr;
    });
    assert.match(stderr, /gatehouse: malformed SFTP from the client \(SFTP packet length 0 is out of range\)/);
    assert.equal(oneEvent(rec, 'sftp.closed').from, 'client');
    // The next channel works as usual.
    const ok = await runSftp(w.opts(), [`ls ${dir}`]);
    assert.equal(ok.code, 0, ok.stderr);
  });

  it('a target that answers an SFTP version above 3 gets the channel closed: its packets could hide changes', async () => {
    // An "sftp-server" run as an exec (what `sftp -s` does) that claims version 6.
    const fake = join(w.work, 'fake', 'sftp-server');
    mkdirSync(join(w.work, 'fake'));
    writeFileSync(fake, "#!/bin/sh\nprintf '\\000\\000\\000\\005\\002\\000\\000\\000\\006'\nexec cat >/dev/null\n", { mode: 0o755 });
    let first: Buffer | null = null;
    let stderr = '';
    const rec = await rawSession(async (c) => {
      c.channel.once('data', (d: Buffer) => { first = d; });
      await c.write(packet(FXP.INIT, u32(6)));
      await Promise.race([c.closed, sleep(10_000)]);
      stderr = c.stderr;
    }, { exec: fake, skipInit: true });
    assert.equal(first, null, 'the VERSION 6 reply was not passed on');
    assert.match(stderr, /gatehouse: the target chose SFTP version 6; the gateway records version 3 only; closing this channel/);
    const why = oneEvent(rec, 'sftp.closed');
    assert.deepEqual({ from: why.from, reason: why.reason }, { from: 'target', reason: 'the target chose SFTP version 6; the gateway records version 3 only' });
  });

  it('1000 handles with out-of-order writes share one reorder budget: the channel is closed, gateway memory stays bounded', async () => {
    const HANDLES = 1000;
    const CHUNK = 255 * 1024;
    const data = Buffer.alloc(CHUNK, 0x61);
    let rssBefore = 0;
    let rssPeak = 0;
    let stderr = '';
    let sent = 0;
    const rec = await rawSession(async (c) => {
      // 1000 handles on /dev/null (each open for writing is on record first).
      const opens = Array.from({ length: HANDLES }, () => c.build(FXP.OPEN, str('/dev/null'), u32(FXF.WRITE), attrs()));
      await c.write(Buffer.concat(opens.map((o) => o.bytes)));
      const handles = (await Promise.all(opens.map((o) => o.reply))).map((r) => {
        assert.equal(r.type, FXP.HANDLE, statusOf(r));
        return r.body.subarray(4, 4 + r.body.readUInt32BE(0));
      });
      rssBefore = gatewayRssMiB();
      const sampler = setInterval(() => { rssPeak = Math.max(rssPeak, gatewayRssMiB()); }, 20);
      try {
        // Each handle gets data past a gap the client never fills: held for a hash, per file.
        // Before the budget was per channel, this held every byte: 1000 × 255 KiB ≈ 250 MiB.
        for (const h of handles) {
          // One byte at 0 starts the stream (a first write past 0 is a resumed upload: never held); then a gap.
          const writes = Buffer.concat([packet(FXP.WRITE, u32(0), str(h), u64(0), str(data.subarray(0, 1))), packet(FXP.WRITE, u32(0), str(h), u64(2), str(data))]);
          if (await Promise.race([c.closed.then(() => true), c.write(writes).then(() => false)])) break;
          sent++;
        }
        await Promise.race([c.closed, sleep(15_000)]);
        await sleep(200);
      } finally {
        clearInterval(sampler);
      }
      rssPeak = Math.max(rssPeak, gatewayRssMiB());
      stderr = c.stderr;
    });
    const growth = rssPeak - rssBefore;
    console.log(`# gateway RSS ${rssBefore.toFixed(0)} MiB before, ${rssPeak.toFixed(0)} MiB peak (+${growth.toFixed(0)} MiB); ${sent} writes of ${CHUNK} bytes sent before the close`);
    assert.match(stderr, /gatehouse: out-of-order SFTP data on this channel exceeds the gateway's reorder budget of 16777216 bytes; closing this channel/);
    assert.ok(growth < 128, `the gateway held ${growth.toFixed(0)} MiB for one channel`);
    const why = oneEvent(rec, 'sftp.closed');
    assert.match(String(why.reason), /reorder budget/);
    assert.equal(eventsOf(rec, 'file.open').length, HANDLES, 'every open for writing is on record');
    // The files still open when the channel closed are recorded as they stood.
    const ops = eventsOf(rec, 'file.op').filter((e) => e.data.path === '/dev/null');
    assert.equal(ops.length, HANDLES);
    assert.ok(ops.every((e) => e.data.status === 'channel closed before the file was closed'), describeEvents(rec).slice(0, 2000));
    // Those that got data past their gap have no hash: it was never one stream.
    assert.ok(ops.filter((e) => Number(e.data.size) > 1).every((e) => e.data.sha256 === null && /not one contiguous stream/.test(String(e.data.hashNote))));
  });

  it('reads past a gap the client never fills (download side): the replies held for the hash stop at the budget, the channel is closed', async () => {
    const big = join(dir, 'sparse-64m.bin');
    writeFileSync(big, '');
    truncateSync(big, 64 * 1024 * 1024);
    const CHUNK = 255 * 1024;
    let stderr = '';
    let closedInTime = false;
    const rec = await rawSession(async (c) => {
      const h = await c.open(big, FXF.READ);
      assert.equal((await c.request(FXP.READ, str(h), u64(0), u32(1))).type, FXP.DATA);
      // Byte 1 is never read: every later reply waits behind it for the content hash.
      const reads = Array.from({ length: 200 }, (_, i) => c.build(FXP.READ, str(h), u64(2 + i * CHUNK), u32(CHUNK)).bytes);
      await c.write(Buffer.concat(reads));
      closedInTime = await Promise.race([c.closed.then(() => true), sleep(15_000).then(() => false)]);
      stderr = c.stderr;
    });
    assert.ok(closedInTime, 'the gateway closed the channel');
    // The client is told why unless its window is full of the data it asked for: ssh2 then never
    // sends the queued stderr before the close. The record and the log say why in every case.
    if (stderr) assert.match(stderr, /exceeds the gateway's reorder budget of 16777216 bytes; closing this channel/);
    const why = oneEvent(rec, 'sftp.closed');
    assert.deepEqual({ from: why.from, reason: why.reason }, { from: 'target', reason: "out-of-order SFTP data on this channel exceeds the gateway's reorder budget of 16777216 bytes" });
    assert.match(w.gw.logs(), /"err":"out-of-order SFTP data on this channel exceeds the gateway's reorder budget of 16777216 bytes".*"msg":"stream cannot be checked; closing channel"/);
    assert.equal(only(rec, 'file.op', (d) => d.path === big).data.status, 'channel closed before the file was closed');
  });

  it('a target that never answers cannot make the gateway remember every request: the channel is closed past 32 MiB of pending paths', async () => {
    // An "sftp-server" of the user's own (run as an exec, as `sftp -s` does): it says VERSION 3, then reads and never answers.
    const mute = join(w.work, 'mute', 'sftp-server');
    mkdirSync(join(w.work, 'mute'));
    writeFileSync(mute, "#!/bin/sh\nprintf '\\000\\000\\000\\005\\002\\000\\000\\000\\003'\nexec cat >/dev/null\n", { mode: 0o755 });
    const path = `/${'p'.repeat(200 * 1024)}`;
    let rssBefore = 0;
    let rssPeak = 0;
    let sent = 0;
    let stderr = '';
    const rec = await rawSession(async (c) => {
      rssBefore = gatewayRssMiB();
      const sampler = setInterval(() => { rssPeak = Math.max(rssPeak, gatewayRssMiB()); }, 20);
      try {
        // 1000 OPENDIRs of a 200 KiB path: 200 MB the tracker would keep until answers that never come.
        for (let i = 0; i < 1000; i++) {
          if (await Promise.race([c.closed.then(() => true), c.write(c.build(FXP.OPENDIR, str(path)).bytes).then(() => false)])) break;
          sent++;
        }
        await Promise.race([c.closed, sleep(15_000)]);
        await sleep(200);
      } finally {
        clearInterval(sampler);
      }
      rssPeak = Math.max(rssPeak, gatewayRssMiB());
      stderr = c.stderr;
    }, { exec: mute });
    const growth = rssPeak - rssBefore;
    console.log(`# gateway RSS ${rssBefore.toFixed(0)} MiB before, ${rssPeak.toFixed(0)} MiB peak (+${growth.toFixed(0)} MiB); ${sent} unanswered OPENDIRs of 200 KiB sent before the close`);
    assert.match(stderr, /gatehouse: the SFTP channel's requests awaiting an answer and open handles hold more than 33554432 characters of paths; the gateway tracks no more; closing this channel/);
    assert.ok(growth < 128, `the gateway held ${growth.toFixed(0)} MiB for one channel`);
    assert.equal(oneEvent(rec, 'sftp.closed').from, 'client');
  });

  it('1000 open handles each written out of order within the budget: every upload keeps its hash, the channel stays open', async () => {
    const HANDLES = 1000;
    const half = 4096;
    const files = Array.from({ length: HANDLES }, (_, i) => ({ path: join(dir, `ooo-${i}.bin`), content: Buffer.alloc(2 * half, i % 251) }));
    const rec = await rawSession(async (c) => {
      const opens = files.map((f) => c.build(FXP.OPEN, str(f.path), u32(FXF.WRITE | FXF.CREAT | FXF.TRUNC), attrs(0o644)));
      await c.write(Buffer.concat(opens.map((o) => o.bytes)));
      const handles = (await Promise.all(opens.map((o) => o.reply))).map((r) => r.body.subarray(4, 4 + r.body.readUInt32BE(0)));
      // The first byte of each (a first write past 0 would be a resumed upload, never held), then the
      // second halves (1000 × 4 KiB held at once, across the handles), then the rest of the first halves.
      for (const [from, to] of [[0, 1], [half, 2 * half], [1, half]] as const) {
        const writes = handles.map((h, i) => c.build(FXP.WRITE, str(h), u64(from), str(files[i]!.content.subarray(from, to))));
        await c.write(Buffer.concat(writes.map((x) => x.bytes)));
        for (const x of writes) assert.equal(statusCode(await x.reply), 0);
      }
      const closes = handles.map((h) => c.build(FXP.CLOSE, str(h)));
      await c.write(Buffer.concat(closes.map((x) => x.bytes)));
      await Promise.all(closes.map((x) => x.reply));
    });
    assert.equal(eventsOf(rec, 'sftp.closed').length, 0, describeEvents(rec).slice(0, 2000));
    for (const f of files) {
      assert.ok(readFileSync(f.path).equals(f.content), `${f.path} arrived intact`);
      const op = only(rec, 'file.op', (d) => d.path === f.path).data;
      assert.deepEqual({ op: op.op, size: op.size, sha256: op.sha256, status: op.status }, { op: 'upload', size: 2 * half, sha256: sha256(f.content), status: 'ok' });
    }
  });
});
