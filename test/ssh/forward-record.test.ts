// Forwarding requests on record before anything opens: an allowed -R before the target listens and
// each connection through it before it reaches the client. Unix-socket forwarding (OpenSSH
// streamlocal: `-R /path:…`, `-L port:/path`) is refused by the
// gateway, and every such request is on record as refused, as TCP forwarding requests are.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { connect, createServer, type Server } from 'node:net';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { runSsh } from '../support/ssh-client.ts';
import { freePort } from '../support/pg-cluster.ts';
import { describeEvents, eventsOf, oneEvent, recordOne, sleep, startSsh, startSshWorld, type SshWorld } from './helpers.ts';

let w: SshWorld;
let echo: Server;
let echoPort = 0;

before(async () => {
  w = await startSshWorld({ connectionArgs: ['--allow-forwarding', 'local,remote'] });
  echo = createServer((s) => s.pipe(s));
  await new Promise<void>((r) => echo.listen(0, '127.0.0.1', () => r()));
  echoPort = (echo.address() as { port: number }).port;
});

after(async () => {
  await new Promise<void>((r) => echo?.close(() => r()));
  await w?.stop();
});

describe('Unix-socket forwarding through the gateway', () => {
  it('-R /path (streamlocal-forward) is refused: ssh exits with ExitOnForwardFailure, the socket never appears, the refusal is recorded', async () => {
    const sock = join(w.work, 'remote.sock'); // the target is this machine
    const { rec, result } = await recordOne(w.gw, () => runSsh(w.opts({
      extra: ['-N', '-R', `${sock}:127.0.0.1:${echoPort}`, '-o', 'ExitOnForwardFailure=yes'],
    })));
    assert.equal(result.code, 255, result.stderr);
    assert.match(result.stderr, /forwarding failed/);
    assert.equal(existsSync(sock), false, 'the target never listened on the socket');
    const fwd = oneEvent(rec, 'ssh.forward');
    assert.deepEqual({ kind: fwd.kind, bind: fwd.bind, allowed: fwd.allowed }, { kind: 'remote-socket', bind: sock, allowed: false }, describeEvents(rec));
    assert.match(String(fwd.reason), /Unix socket forwarding is not supported/);
  });

  it('-L port:/path (direct-streamlocal) is refused when used, and recorded', async () => {
    const lport = await freePort();
    const target = join(w.work, 'some-daemon.sock');
    const { rec } = await recordOne(w.gw, async () => {
      const ssh = startSsh(w.opts({ logLevel: 'INFO', extra: ['-N', '-L', `127.0.0.1:${lport}:${target}`] }));
      try {
        let opened = false;
        for (let i = 0; i < 100 && !opened; i++) {
          opened = await new Promise<boolean>((resolve) => {
            const s = connect({ port: lport, host: '127.0.0.1' });
            s.once('connect', () => { s.destroy(); resolve(true); });
            s.once('error', () => resolve(false));
          });
          if (!opened) await sleep(50);
        }
        assert.ok(opened, 'ssh listens locally');
        for (let i = 0; i < 100 && !/open failed/.test(ssh.stderr()); i++) await sleep(20);
        assert.match(ssh.stderr(), /open failed/);
      } finally {
        await ssh.stop();
      }
    });
    const fwd = eventsOf(rec, 'ssh.forward');
    assert.ok(fwd.length >= 1, describeEvents(rec));
    assert.deepEqual({ kind: fwd[0]!.data.kind, dest: fwd[0]!.data.dest, allowed: fwd[0]!.data.allowed }, { kind: 'local-socket', dest: target, allowed: false });
  });

  it('an allowed -R is on record before the target listens, and each connection through it before it reaches the client', async () => {
    const rport = await freePort();
    const payload = 'back through -R\n';
    const { rec } = await recordOne(w.gw, async () => {
      const ssh = startSsh(w.opts({ extra: ['-N', '-R', `127.0.0.1:${rport}:127.0.0.1:${echoPort}`, '-o', 'ExitOnForwardFailure=yes'] }));
      try {
        let got = '';
        for (let i = 0; i < 100 && got !== payload; i++) {
          got = await new Promise<string>((resolve) => {
            const s = connect({ port: rport, host: '127.0.0.1' }); // the target's side is this machine
            let text = '';
            s.once('connect', () => s.write(payload));
            s.on('data', (d: Buffer) => { text += d.toString(); if (text === payload) s.end(); });
            s.once('error', () => resolve(''));
            s.once('close', () => resolve(text));
          });
          if (got !== payload) await sleep(50);
        }
        assert.equal(got, payload, ssh.stderr());
        await sleep(300);
      } finally {
        await ssh.stop();
      }
    });
    const types = rec.events.filter((e) => e.type.startsWith('ssh.forward')).map((e) => `${e.type} ${String(e.data.kind)} ${String(e.data.bind)}`);
    assert.deepEqual(types.slice(0, 3), [`ssh.forward remote 127.0.0.1:${rport}`, `ssh.forward.opened remote 127.0.0.1:${rport}`, `ssh.forward.closed remote 127.0.0.1:${rport}`], types.join(' | '));
    assert.equal(oneEvent(rec, 'ssh.forward').allowed, true);
  });
});
