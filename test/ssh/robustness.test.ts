// The SSH listener under abuse and failure: garbage and truncated handshakes, connections that
// stall before signing in, a client killed mid-upload, the target's sshd killed mid-session, and
// many connections at once. The gateway must keep serving and every admitted session must end in
// the recording with a reason, leaving a store that verifies.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { runSsh, sshOptions } from '../support/ssh-client.ts';
import { run } from '../support/processes.ts';
import { GATEHOUSE_BIN } from '../support/gateway.ts';
import {
  clientEnv, describeEvents, eventsOf, newRecordings, oneEvent, sessionIds, sleep, startSsh, startSshWorld, type Data, type SshWorld,
} from './helpers.ts';

let w: SshWorld;
/** Connections opened at the start that never finish their handshake; checked by the last test. */
const stalled: Array<{ name: string; sock: Socket; closedAt: number | null }> = [];
let stalledAt = 0;
/** How long a connection may sit in the handshake / sign-in before the gateway gives up on it (the PostgreSQL listener allows 30 s). */
const HANDSHAKE_LIMIT_MS = 45_000;

before(async () => {
  w = await startSshWorld();
  stalledAt = Date.now();
  for (const [name, bytes] of [
    ['silent (connects, sends nothing)', ''],
    ['truncated banner, then silence', 'SSH-2.0-Open'],
    ['banner, then silence in key exchange', 'SSH-2.0-OpenSSH_9.2\r\n'],
  ] as const) {
    const sock = connect(w.gw.sshPort, '127.0.0.1');
    const entry = { name, sock, closedAt: null as number | null };
    sock.on('error', () => {});
    sock.on('data', () => {});
    sock.on('close', () => { entry.closedAt = Date.now(); });
    sock.write(bytes);
    stalled.push(entry);
  }
});

after(async () => {
  for (const s of stalled) s.sock.destroy();
  await w?.stop();
});

/** Sends `data` on a raw TCP connection to the SSH port; resolves with what came back once the gateway closes it. */
function rawExchange(data: Buffer, halfClose: boolean, timeoutMs = 10_000): Promise<{ closed: boolean; got: Buffer }> {
  return new Promise((resolve) => {
    const sock = connect(w.gw.sshPort, '127.0.0.1');
    const got: Buffer[] = [];
    const timer = setTimeout(() => { sock.destroy(); resolve({ closed: false, got: Buffer.concat(got) }); }, timeoutMs);
    sock.on('data', (d: Buffer) => got.push(d));
    sock.on('error', () => {});
    sock.on('close', () => { clearTimeout(timer); resolve({ closed: true, got: Buffer.concat(got) }); });
    sock.write(data);
    if (halfClose) sock.end();
  });
}

function sshdSessionPids(): number[] {
  // The fixture's sshd writes its pid file in its directory; every session process descends from it.
  const main = Number(readFileSync(join(w.sshd.dir, 'sshd.pid'), 'utf8').trim());
  const parent = new Map<number, number>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      parent.set(Number(name), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]));
    } catch {
      // gone
    }
  }
  const out: number[] = [];
  const queue = [main];
  while (queue.length > 0) {
    const p = queue.shift()!;
    for (const [child, pp] of parent) if (pp === p) { out.push(child); queue.push(child); }
  }
  return out;
}

describe('SSH listener robustness', () => {
  it('closes connections that send garbage or a truncated banner, and keeps serving', async () => {
    const beforeIds = await sessionIds(w.gw);
    const cases: Array<[string, Buffer, boolean]> = [
      ['random bytes', randomBytes(4096), false],
      ['an HTTP request', Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'), false],
      ['a truncated banner, then EOF', Buffer.from('SSH-2.0-Open'), true],
      ['a banner, then garbage packets', Buffer.concat([Buffer.from('SSH-2.0-OpenSSH_9.2\r\n'), randomBytes(8192)]), false],
    ];
    const results = await Promise.all(cases.map(([, data, half]) => rawExchange(data, half)));
    results.forEach((r, i) => {
      assert.ok(r.closed, `the gateway closed the connection that sent ${cases[i]![0]}`);
      assert.match(r.got.toString('latin1'), /^SSH-2\.0-/, 'the gateway spoke SSH first');
    });
    assert.equal(w.gw.process.exitCode, null, 'the gateway is still running');
    const r = await runSsh(w.opts(), 'echo still-serving');
    assert.equal(r.stdout, 'still-serving\n', r.stderr);
    const recs = await newRecordings(w.gw, beforeIds, 1);
    assert.equal(recs.length, 1, 'only the real client was recorded');
  });

  it('a client killed (SIGKILL) mid 100 MB upload: the session ends in the recording, earlier events kept, the store verifies', async () => {
    const dir = join(w.work, 'upload');
    mkdirSync(dir);
    const src = join(dir, 'big.bin');
    const gen = await run('sh', ['-c', `head -c ${100 * 1024 * 1024} /dev/urandom > '${src}'`]);
    assert.equal(gen.code, 0);
    const dest = join(dir, 'partial.bin');
    const batch = join(dir, 'batch');
    writeFileSync(batch, `put ${src} ${dest}\n`);
    const beforeIds = await sessionIds(w.gw);
    // Its own process group, so that sftp and the ssh it runs die together, as in a crash.
    const sftp = spawn('sftp', ['-b', batch, '-P', String(w.gw.sshPort), ...sshOptions(w.opts()), 'box@127.0.0.1'], {
      env: clientEnv(), stdio: 'ignore', detached: true,
    });
    const exited = new Promise<void>((r) => sftp.on('exit', () => r()));
    let killedAt = -1;
    try {
      const deadline = Date.now() + 30_000;
      while (!(existsSync(dest) && statSync(dest).size >= 10 * 1024 * 1024)) {
        if (sftp.exitCode !== null) assert.fail('sftp finished before it could be killed');
        if (Date.now() > deadline) assert.fail('the upload did not start');
        await sleep(5);
      }
      killedAt = statSync(dest).size;
      process.kill(-sftp.pid!, 'SIGKILL');
    } finally {
      if (sftp.exitCode === null) try { process.kill(-sftp.pid!, 'SIGKILL'); } catch { /* gone */ }
      await exited;
    }
    assert.ok(killedAt < 100 * 1024 * 1024, 'killed mid-upload');

    const recs = await newRecordings(w.gw, beforeIds, 1);
    assert.equal(recs.length, 1);
    const rec = recs[0]!;
    assert.notEqual(rec.session.endedAt, null, 'the session ended');
    assert.equal(rec.session.endReason, 'client disconnected');
    assert.equal(rec.events.at(-1)!.type, 'session.end');
    assert.equal(rec.events[0]!.type, 'session.start');
    assert.equal(oneEvent(rec, 'ssh.subsystem').name, 'sftp');
    assert.ok(eventsOf(rec, 'file.open').some((e) => e.data.path === dest), describeEvents(rec));
    const op = oneEvent(rec, 'file.op', (d) => d.op === 'upload' && d.path === dest);
    assert.notEqual(op.status, 'ok', `the interrupted upload is not recorded as complete: ${JSON.stringify(op)}`);
    assert.ok(Number(op.size) < 100 * 1024 * 1024, `recorded size ${String(op.size)}`);
    // Sequence numbers are contiguous: nothing recorded was lost.
    rec.events.forEach((e, i) => assert.equal(e.seq, i));

    const verify = await run(process.execPath, [GATEHOUSE_BIN, 'verify', '--store', '--data-dir', w.gw.dataDir], { timeoutMs: 60_000 });
    assert.equal(verify.code, 0, `verify failed:\n${verify.stdout}${verify.stderr}`);
    assert.match(verify.stdout, /all intact/);
    assert.doesNotMatch(verify.stdout, /BROKEN/);
  });

  it('the target sshd killed mid-session: the client gets an error, the recording ends with a reason', async (t) => {
    const beforeIds = await sessionIds(w.gw);
    const ssh = startSsh(w.opts(), 'echo STARTED; sleep 300; echo should-not-finish');
    let result: { code: number | null; signal: NodeJS.Signals | null };
    try {
      await ssh.waitForStdout('STARTED');
      const pids = sshdSessionPids();
      assert.ok(pids.length > 0, 'the session has sshd processes');
      for (const pid of pids) {
        try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
      }
      result = await Promise.race([ssh.exited, sleep(20_000).then(() => null)]) ?? assert.fail('the client did not notice the target went away');
    } finally {
      await ssh.stop();
    }
    assert.notEqual(result.code, 0, `client exit ${result.code}; stderr: ${ssh.stderr()}`);
    assert.doesNotMatch(ssh.stdout(), /should-not-finish/);
    const recs = await newRecordings(w.gw, beforeIds, 1);
    assert.equal(recs.length, 1);
    const rec = recs[0]!;
    assert.notEqual(rec.session.endedAt, null);
    assert.equal(rec.session.endReason, 'target closed the connection');
    assert.equal(oneEvent(rec, 'ssh.exec').command, 'echo STARTED; sleep 300; echo should-not-finish');
    const exit: Data = oneEvent(rec, 'ssh.exit');
    assert.equal(exit.code, null);
    assert.match(String((exit.stdout as Data).sample), /^STARTED\n/);
    t.diagnostic(`client after target loss: exit ${result.code}, stderr ${JSON.stringify(ssh.stderr())}`);
    assert.match(ssh.stderr(), /Received disconnect from .*: ?11: gatehouse: target closed the connection/, 'the client is told why');
    // The shared target keeps serving new sessions.
    const again = await runSsh(w.opts(), 'echo target-back');
    assert.equal(again.stdout, 'target-back\n', again.stderr);
  });

  it('serves 20 connections at once', async () => {
    const beforeIds = await sessionIds(w.gw);
    const results = await Promise.all(Array.from({ length: 20 }, (_, i) => runSsh(w.opts(), `echo parallel-${i}`)));
    results.forEach((r, i) => {
      assert.equal(r.code, 0, `connection ${i}: code ${r.code}, stderr ${r.stderr}`);
      assert.equal(r.stdout, `parallel-${i}\n`);
    });
    const recs = await newRecordings(w.gw, beforeIds, 20);
    assert.equal(recs.length, 20);
    const commands = recs.map((r) => String(oneEvent(r, 'ssh.exec').command)).sort();
    assert.deepEqual(commands, Array.from({ length: 20 }, (_, i) => `echo parallel-${i}`).sort());
    for (const r of recs) {
      assert.equal(r.session.endReason, 'client disconnected');
      assert.equal(oneEvent(r, 'ssh.exit').code, 0);
    }
  });

  it(`drops connections that never finish the handshake (within ${HANDSHAKE_LIMIT_MS / 1000} s)`, async () => {
    // Opened in before(): a silent client, a truncated banner, a banner without key exchange.
    const deadline = stalledAt + HANDSHAKE_LIMIT_MS;
    while (Date.now() < deadline && stalled.some((s) => s.closedAt === null)) await sleep(200);
    const open = stalled.filter((s) => s.closedAt === null).map((s) => s.name);
    assert.deepEqual(open, [], `still open after ${Math.round((Date.now() - stalledAt) / 1000)} s: ${open.join('; ')}`);
  });
});
