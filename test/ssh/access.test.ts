// Who gets through the SSH listener, and what is refused: identity keys and tokens (password and
// keyboard-interactive), wrong / expired / revoked tokens, missing grants, unknown connections,
// a target whose host key changed, a target that rejects the stored credential, host key
// confirmation at `connection add`, and the forwarding policy (local, remote, agent).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { askpassPrompts, runSsh, sshArgs, withAskpass, type SshOptions, type SshResult } from '../support/ssh-client.ts';
import { run } from '../support/processes.ts';
import { generateClientKey, type ClientKey } from '../support/sshd.ts';
import { freePort } from '../support/pg-cluster.ts';
import {
  clientEnv, describeEvents, eventsOf, newRecordings, oneEvent, recordOne, sessionIds, sleep, startSsh, startSshWorld, type Data, type SshWorld,
} from './helpers.ts';

let w: SshWorld;
let echo: Server;
let echoPort = 0;

before(async () => {
  w = await startSshWorld();
  echo = createServer((s) => s.pipe(s));
  await new Promise<void>((r) => echo.listen(0, '127.0.0.1', () => r()));
  echoPort = (echo.address() as { port: number }).port;
});

after(async () => {
  await new Promise<void>((r) => echo?.close(() => r()));
  await w?.stop();
});

async function issueToken(identity: string, ttl = '1h'): Promise<{ token: string; id: string }> {
  const r = await w.gw.cli(['token', 'issue', identity, '--ttl', ttl]);
  assert.equal(r.code, 0, r.stderr);
  const id = /token (tok_\S+) for/.exec(r.stderr)?.[1];
  assert.ok(id, r.stderr);
  return { token: r.stdout.trim().split('\n').pop()!, id };
}

let bob: ClientKey | undefined;
/** An identity with a registered key and no grant. */
async function ensureBob(): Promise<ClientKey> {
  if (bob) return bob;
  await w.gw.cliOk(['identity', 'add', 'bob', '--kind', 'agent']);
  const key = await generateClientKey(w.work, 'ed25519', 'bob');
  await w.gw.cliOk(['key', 'add', 'bob', `${key.privateKeyFile}.pub`]);
  bob = key;
  return key;
}

/** Runs `fn` and returns the sessions it recorded, once `expected` of them have ended (with 0: after a short wait). */
async function recorded<T>(fn: () => Promise<T>, expected: number) {
  const beforeIds = await sessionIds(w.gw);
  const result = await fn();
  if (expected === 0) await sleep(500);
  const recs = await newRecordings(w.gw, beforeIds, expected);
  return { recs, result };
}

function assertRefusedOnChannel(r: SshResult, message: string): void {
  assert.equal(r.code, 1, `exit status 1 expected, got ${r.code}; stderr: ${r.stderr}`);
  assert.ok(r.stderr.includes(`gatehouse: ${message}`), `stderr should say "gatehouse: ${message}"; got: ${r.stderr}`);
  assert.doesNotMatch(r.stdout, /should-not-run/);
}

/** Connects to 127.0.0.1:port, retrying while nothing listens yet; sends `payload`, returns what came back before the close. */
async function exchange(port: number, payload: string, timeoutMs = 15_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const sock = await new Promise<Socket | null>((resolve) => {
      const s = connect({ port, host: '127.0.0.1' });
      s.once('connect', () => resolve(s));
      s.once('error', () => resolve(null));
    });
    if (sock) {
      return new Promise<string>((resolve, reject) => {
        let got = '';
        const timer = setTimeout(() => { sock.destroy(); reject(new Error(`no close from the forward; got ${JSON.stringify(got)}`)); }, 10_000);
        sock.on('data', (d: Buffer) => {
          got += d.toString();
          if (got.length >= payload.length) sock.end();
        });
        sock.on('error', () => {});
        sock.on('close', () => { clearTimeout(timer); resolve(got); });
        sock.write(payload);
      });
    }
    if (Date.now() > deadline) throw new Error(`nothing listens on ${port}`);
    await sleep(50);
  }
}

describe('signing in to the SSH listener', () => {
  it('refuses an unregistered public key and admits nothing', async () => {
    const stranger = await generateClientKey(w.work, 'ed25519', 'stranger');
    const targetLogins = (w.sshd.logs().match(/Accepted publickey/g) ?? []).length;
    const { recs, result } = await recorded(() => runSsh(w.opts({ identityFile: stranger.privateKeyFile }), 'echo should-not-run'), 0);
    assert.equal(result.code, 255);
    assert.match(result.stderr, /Permission denied \(publickey/);
    assert.equal(result.stdout, '');
    assert.equal(recs.length, 0, 'no session was admitted');
    assert.equal((w.sshd.logs().match(/Accepted publickey/g) ?? []).length, targetLogins, 'the gateway did not log in to the target');
  });

  it('admits a registered key and records the key fingerprint', async () => {
    const { rec, result } = await recordOne(w.gw, () => runSsh(w.opts(), 'echo key-ok'));
    assert.equal(result.stdout, 'key-ok\n');
    const start = oneEvent(rec, 'session.start');
    const fp = (await w.gw.cliOk(['key', 'list', '--json']));
    const registered = (JSON.parse(fp) as Array<{ identity: string; fingerprint: string }>).find((k) => k.identity === 'alice')!.fingerprint;
    assert.deepEqual(start.auth, { method: 'publickey', fingerprint: registered });
    assert.equal(rec.session.identity.name, 'alice');
    assert.match(String(start.clientVersion), /^SSH-2\.0-OpenSSH/);
  });

  it('admits a token typed at the password prompt and records how', async () => {
    const { token, id } = await issueToken('alice');
    const env = withAskpass(token);
    const { rec, result } = await recordOne(w.gw, () => runSsh(w.opts({ password: token, preferredAuthentications: 'password', env }), 'echo token-password-ok'));
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stdout, 'token-password-ok\n');
    assert.deepEqual(oneEvent(rec, 'session.start').auth, { method: 'token (password)', tokenId: id });
    assert.equal(rec.session.identity.name, 'alice');
    assert.ok(!JSON.stringify(rec.events).includes(token), 'the token itself is not recorded');
  });

  it('admits a token typed at the keyboard-interactive prompt and records how', async () => {
    const { token, id } = await issueToken('alice');
    const env = withAskpass(token);
    const { rec, result } = await recordOne(w.gw, () => runSsh(w.opts({ password: token, preferredAuthentications: 'keyboard-interactive', env }), 'echo token-kbd-ok'));
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stdout, 'token-kbd-ok\n');
    assert.match(askpassPrompts(env).join('\n'), /Gatehouse token:/);
    assert.deepEqual(oneEvent(rec, 'session.start').auth, { method: 'token (keyboard-interactive)', tokenId: id });
  });

  it('refuses a wrong token and records the refusal', async () => {
    const bad = 'ght_' + 'x'.repeat(43);
    const { recs, result } = await recorded(() => runSsh(w.opts({ password: bad, preferredAuthentications: 'password' }), 'echo should-not-run'), 1);
    assert.equal(result.code, 255);
    assert.match(result.stderr, /Permission denied/);
    assert.equal(result.stdout, '');
    assert.equal(recs.length, 1, 'one refused attempt recorded');
    assert.equal(recs[0]!.session.endReason, 'refused: token unknown (password)');
    assert.equal(recs[0]!.session.connection, 'box');
    assert.deepEqual(oneEvent(recs[0]!, 'access.denied'), { message: 'invalid token', reason: 'token unknown (password)' });
    assert.equal(eventsOf(recs[0]!, 'ssh.exec').length, 0);
  });

  it('refuses an expired token, tells the keyboard-interactive client only "invalid token", and records why', async () => {
    const { token } = await issueToken('alice', '1s');
    await sleep(1500);
    const viaPassword = await recorded(() => runSsh(w.opts({ password: token, preferredAuthentications: 'password' }), 'echo should-not-run'), 1);
    assert.equal(viaPassword.result.code, 255);
    assert.match(viaPassword.result.stderr, /Permission denied/);
    assert.equal(viaPassword.recs.length, 1);
    assert.equal(viaPassword.recs[0]!.session.endReason, 'refused: token expired (password)');

    // keyboard-interactive shows the gateway's message (OpenSSH prints it at LogLevel INFO).
    const viaKbd = await recorded(() => runSsh(w.opts({ password: token, preferredAuthentications: 'keyboard-interactive', logLevel: 'INFO' }), 'echo should-not-run'), 1);
    assert.equal(viaKbd.result.code, 255);
    assert.match(viaKbd.result.stderr, /gatehouse: invalid token/);
    assert.doesNotMatch(viaKbd.result.stderr, /expired/, 'the client is not told why (no oracle for a leaked token)');
    assert.ok(viaKbd.recs.length >= 1);
    assert.equal(oneEvent(viaKbd.recs[0]!, 'access.denied').reason, 'token expired (keyboard-interactive)');
    assert.ok(viaKbd.recs.every((r) => r.session.endReason === 'refused: token expired (keyboard-interactive)'), viaKbd.recs.map((r) => r.session.endReason).join('; '));
  });

  it('refuses a revoked token and records it', async () => {
    const { token } = await issueToken('alice');
    const okFirst = await runSsh(w.opts({ password: token, preferredAuthentications: 'password' }), 'echo before-revoke');
    assert.equal(okFirst.stdout, 'before-revoke\n', okFirst.stderr);
    await w.gw.cliOk(['token', 'revoke', token]);
    const { recs, result } = await recorded(() => runSsh(w.opts({ password: token, preferredAuthentications: 'password' }), 'echo should-not-run'), 1);
    assert.equal(result.code, 255);
    assert.match(result.stderr, /Permission denied/);
    assert.equal(result.stdout, '');
    assert.equal(recs.length, 1);
    assert.equal(recs[0]!.session.endReason, 'refused: token revoked (password)');
  });
});

describe('admission after sign-in', () => {
  it('refuses an identity without a grant, on stderr with status 1, and records it', async () => {
    const bobKey = await ensureBob();
    const targetLogins = (w.sshd.logs().match(/Accepted publickey/g) ?? []).length;
    const { recs, result } = await recorded(() => runSsh(w.opts({ identityFile: bobKey.privateKeyFile }), 'echo should-not-run'), 1);
    const message = 'identity "bob" has no grant on connection "box"';
    assertRefusedOnChannel(result, message);
    assert.equal(recs.length, 1);
    assert.equal(recs[0]!.session.identity.name, 'bob');
    assert.equal(recs[0]!.session.endReason, `refused: ${message}`);
    assert.equal(oneEvent(recs[0]!, 'access.denied').message, message);
    assert.equal((w.sshd.logs().match(/Accepted publickey/g) ?? []).length, targetLogins, 'the target was not contacted');
  });

  it('closes a refused connection that opens no session channel (ssh -N) instead of leaving it hanging', async () => {
    const bobKey = await ensureBob();
    const beforeIds = await sessionIds(w.gw);
    const ssh = startSsh(w.opts({ identityFile: bobKey.privateKeyFile, logLevel: 'INFO', extra: ['-N'] }));
    try {
      const exited = await Promise.race([ssh.exited, sleep(10_000).then(() => null)]);
      assert.ok(exited, `ssh -N as an identity without a grant is still connected after 10 s; client stderr: ${JSON.stringify(ssh.stderr())}`);
      assert.notEqual(exited.code, 0);
    } finally {
      await ssh.stop();
    }
    const recs = await newRecordings(w.gw, beforeIds, 1);
    assert.equal(recs[0]?.session.endReason, 'refused: identity "bob" has no grant on connection "box"');
  });

  it('refuses an unknown connection name with a clear message', async () => {
    const { recs, result } = await recorded(() => runSsh(w.opts({ connection: 'no-such-box' }), 'echo should-not-run'), 1);
    assertRefusedOnChannel(result, 'there is no SSH connection named "no-such-box"');
    assert.equal(recs.length, 1);
    assert.match(String(recs[0]!.session.endReason), /^refused: there is no SSH connection named "no-such-box"/);
  });

  it('refuses when the target rejects the stored credential', async () => {
    const unauthorized = await generateClientKey(w.work, 'ed25519', 'not-authorized-on-target');
    await w.gw.cliOk(['connection', 'add', 'box-badkey', '--type', 'ssh', '--host', w.sshd.host, '--port', String(w.sshd.port),
      '--user', w.sshd.user, '--key-file', unauthorized.privateKeyFile, '--host-key', w.sshd.hostKeyPublic]);
    await w.gw.cliOk(['grant', 'alice', 'box-badkey']);
    const { recs, result } = await recorded(() => runSsh(w.opts({ connection: 'box-badkey' }), 'echo should-not-run'), 1);
    const message = 'the target of connection "box-badkey" did not accept the gateway\'s credential';
    assertRefusedOnChannel(result, message);
    assert.ok(!result.stderr.includes('PRIVATE KEY'), 'no credential material shown');
    assert.equal(recs.length, 1);
    assert.equal(recs[0]!.session.endReason, `refused: ${message}`);
    assert.equal(oneEvent(recs[0]!, 'access.denied').message, message);
  });

  it('refuses with a clear message when the target cannot be reached', async () => {
    const closedPort = await freePort();
    await w.gw.cliOk(['connection', 'add', 'box-down', '--type', 'ssh', '--host', '127.0.0.1', '--port', String(closedPort),
      '--user', w.sshd.user, '--key-file', w.sshd.clientKeyFile, '--host-key', w.sshd.hostKeyPublic]);
    await w.gw.cliOk(['grant', 'alice', 'box-down']);
    const { recs, result } = await recorded(() => runSsh(w.opts({ connection: 'box-down' }), 'echo should-not-run'), 1);
    assertRefusedOnChannel(result, 'cannot reach the target of connection "box-down"');
    assert.equal(recs.length, 1);
    assert.match(String(recs[0]!.session.endReason), /^refused: cannot reach the target of connection "box-down"/);
  });

  it('logs in to the target with a stored password (--password-env)', async (t) => {
    const login = w.sshd.passwordLogin;
    if (login === undefined) return t.skip(w.sshd.passwordSkipReason);
    await w.gw.cliOk(['connection', 'add', 'box-password', '--type', 'ssh', '--host', w.sshd.host, '--port', String(w.sshd.port),
      '--user', login.user, '--password-env', 'TARGET_SSH_PASSWORD', '--host-key', w.sshd.hostKeyPublic], { env: { TARGET_SSH_PASSWORD: login.password } });
    await w.gw.cliOk(['grant', 'alice', 'box-password']);
    const { rec, result } = await recordOne(w.gw, () => runSsh(w.opts({ connection: 'box-password' }), 'id -un'));
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stdout, `${login.user}\n`);
    assert.match(w.sshd.logs(), new RegExp(`Accepted password for ${login.user}`));
    assert.ok(!JSON.stringify(rec).includes(login.password), 'the target password is not recorded');
  });

  it('`connection add` with a wrong --host-key-fingerprint fails and creates nothing; the right one pins the key', async () => {
    const wrong = 'SHA256:' + 'A'.repeat(43);
    const r = await w.gw.cli(['connection', 'add', 'box-wrongfp', '--type', 'ssh', '--host', w.sshd.host, '--port', String(w.sshd.port),
      '--user', w.sshd.user, '--key-file', w.sshd.clientKeyFile, '--host-key-fingerprint', wrong]);
    assert.notEqual(r.code, 0);
    assert.ok(r.stderr.includes(w.sshd.hostKeyFingerprint), `names the offered fingerprint: ${r.stderr}`);
    assert.match(r.stderr, /does not match --host-key-fingerprint/);
    assert.match(r.stderr, /nothing was created/);
    const list = JSON.parse(await w.gw.cliOk(['connection', 'list', '--json'])) as Array<{ name: string; options: { hostKey?: string } }>;
    assert.equal(list.some((c) => c.name === 'box-wrongfp'), false, 'no connection created');

    await w.gw.cliOk(['connection', 'add', 'box-rightfp', '--type', 'ssh', '--host', w.sshd.host, '--port', String(w.sshd.port),
      '--user', w.sshd.user, '--key-file', w.sshd.clientKeyFile, '--host-key-fingerprint', w.sshd.hostKeyFingerprint]);
    await w.gw.cliOk(['grant', 'alice', 'box-rightfp']);
    const ok = await runSsh(w.opts({ connection: 'box-rightfp' }), 'echo pinned-ok');
    assert.equal(ok.stdout, 'pinned-ok\n', ok.stderr);
  });
});

describe('forwarding policy', () => {
  it('refuses local forwarding (-L) by default and records it', async () => {
    const lport = await freePort();
    const { rec } = await recordOne(w.gw, async () => {
      // LogLevel INFO: OpenSSH reports refused channel opens at that level.
      const ssh = startSsh(w.opts({ logLevel: 'INFO', extra: ['-N', '-L', `127.0.0.1:${lport}:127.0.0.1:${echoPort}`, '-o', 'ExitOnForwardFailure=yes'] }));
      try {
        const got = await exchange(lport, 'should not arrive\n');
        assert.equal(got, '', 'nothing comes back through a refused forward');
        for (let i = 0; i < 50 && !/open failed/.test(ssh.stderr()); i++) await sleep(20);
        assert.match(ssh.stderr(), /channel \d+: open failed/);
      } finally {
        await ssh.stop();
      }
      return null;
    });
    const fwd = oneEvent(rec, 'ssh.forward');
    assert.deepEqual({ kind: fwd.kind, dest: fwd.dest, allowed: fwd.allowed }, { kind: 'local', dest: `127.0.0.1:${echoPort}`, allowed: false });
    assert.equal(eventsOf(rec, 'ssh.forward.closed').length, 0);
  });

  it('refuses remote forwarding (-R) by default: ssh exits with ExitOnForwardFailure, recorded', async () => {
    const rport = await freePort();
    const { rec, result } = await recordOne(w.gw, () => runSsh(w.opts({
      extra: ['-N', '-R', `127.0.0.1:${rport}:127.0.0.1:${echoPort}`, '-o', 'ExitOnForwardFailure=yes'],
    })));
    assert.equal(result.code, 255, result.stderr);
    assert.match(result.stderr, /remote port forwarding failed for listen port/);
    const fwd = oneEvent(rec, 'ssh.forward');
    assert.deepEqual({ kind: fwd.kind, bind: fwd.bind, allowed: fwd.allowed }, { kind: 'remote', bind: `127.0.0.1:${rport}`, allowed: false });
  });

  it('forwards -L on a connection that allows local forwarding, recording the byte counts', async () => {
    await w.addConnection('box-fwd', ['--allow-forwarding', 'local']);
    const lport = await freePort();
    const payload = 'hello through the gateway\n';
    const { rec } = await recordOne(w.gw, async () => {
      const ssh = startSsh(w.opts({ connection: 'box-fwd', extra: ['-N', '-L', `127.0.0.1:${lport}:127.0.0.1:${echoPort}`, '-o', 'ExitOnForwardFailure=yes'] }));
      try {
        const got = await exchange(lport, payload);
        assert.equal(got, payload, `echo came back through the forward; ssh stderr: ${ssh.stderr()}`);
        await sleep(300);
      } finally {
        await ssh.stop();
      }
    });
    const fwd = oneEvent(rec, 'ssh.forward');
    assert.deepEqual({ kind: fwd.kind, dest: fwd.dest, allowed: fwd.allowed }, { kind: 'local', dest: `127.0.0.1:${echoPort}`, allowed: true });
    const closed = oneEvent(rec, 'ssh.forward.closed');
    assert.equal(closed.bytesToTarget, Buffer.byteLength(payload));
    assert.equal(closed.bytesToClient, Buffer.byteLength(payload));
    // -R is still refused on this connection.
    const rport = await freePort();
    const r = await runSsh(w.opts({ connection: 'box-fwd', extra: ['-N', '-R', `127.0.0.1:${rport}:127.0.0.1:${echoPort}`, '-o', 'ExitOnForwardFailure=yes'] }));
    assert.equal(r.code, 255);
  });

  it('forwards the agent (-A) only where the connection allows it; each use is recorded', async () => {
    const sock = join(w.work, 'agent.sock');
    const agent: ChildProcess = spawn('ssh-agent', ['-D', '-a', sock], { stdio: 'ignore' });
    try {
      for (let i = 0; i < 100 && !existsSync(sock); i++) await sleep(20);
      assert.ok(existsSync(sock), 'ssh-agent is up');
      const added = await run('ssh-add', [w.key.privateKeyFile], { env: { ...clientEnv(), SSH_AUTH_SOCK: sock }, timeoutMs: 10_000 });
      assert.equal(added.code, 0, added.stderr);
      const fingerprint = (await run('ssh-keygen', ['-lf', `${w.key.privateKeyFile}.pub`], { timeoutMs: 10_000 })).stdout.split(' ')[1]!;
      // The client needs an agent to forward: point IdentityAgent at it (the fixtures say "none").
      const withAgent = (opts: SshOptions) => run('ssh', [...sshArgs(opts).map((a) => (a === 'IdentityAgent=none' ? `IdentityAgent=${sock}` : a)),
        '-A', `${opts.user}@127.0.0.1`, '--', 'echo "[$SSH_AUTH_SOCK]"; ssh-add -l'], { env: clientEnv(), timeoutMs: 30_000 });
      // Control: straight to the target the agent is forwarded.
      const direct = await withAgent(w.direct());
      assert.match(direct.stdout, /^\[\/tmp\/ssh-\S+\]\n/, direct.stderr);

      // Refused by default: no agent socket on the target, recorded as refused before the command.
      const refused = await recordOne(w.gw, () => withAgent(w.opts()));
      assert.match(refused.result.stdout, /^\[\]\n/);
      const fwd = oneEvent(refused.rec, 'ssh.forward');
      assert.equal(fwd.kind, 'agent');
      assert.equal(fwd.allowed, false);
      assert.ok(eventsOf(refused.rec, 'ssh.forward')[0]!.seq < eventsOf(refused.rec, 'ssh.exec')[0]!.seq, describeEvents(refused.rec));

      // Allowed on a connection that says so: the target lists the client's key through the relay.
      await w.addConnection('box-agent', ['--allow-forwarding', 'agent']);
      const allowed = await recordOne(w.gw, () => withAgent(w.opts({ connection: 'box-agent' })));
      assert.equal(allowed.result.code, 0, allowed.result.stderr);
      assert.match(allowed.result.stdout, /^\[\/tmp\/ssh-\S+\]\n/);
      assert.ok(allowed.result.stdout.includes(fingerprint), `the target sees the client's key ${fingerprint}: ${allowed.result.stdout}`);
      assert.equal(oneEvent(allowed.rec, 'ssh.forward').allowed, true);
      assert.equal(eventsOf(allowed.rec, 'ssh.forward.opened').length, 1, describeEvents(allowed.rec));
      const closed = oneEvent(allowed.rec, 'ssh.forward.closed', (d) => d.kind === 'agent');
      assert.ok(Number(closed.bytesToTarget) > 0 && Number(closed.bytesToClient) > 0, JSON.stringify(closed));
    } finally {
      agent.kill('SIGTERM');
    }
  });
});

describe('target host key', () => {
  // Last: replaces the shared target's host key.
  it('refuses when the target offers a different host key, naming both fingerprints, and records it', async () => {
    const pinned = w.sshd.hostKeyFingerprint;
    await w.sshd.restartWithNewHostKey();
    const offered = w.sshd.hostKeyFingerprint;
    assert.notEqual(offered, pinned);
    const { recs, result } = await recorded(() => runSsh(w.opts(), 'echo should-not-run'), 1);
    assert.equal(result.code, 1, result.stderr);
    assert.match(result.stderr, /^gatehouse: the host key of the target of connection "box" has changed/m);
    assert.ok(result.stderr.includes(`pinned ${pinned}`), result.stderr);
    assert.ok(result.stderr.includes(`offered ${offered}`), result.stderr);
    assert.equal(result.stdout, '');
    assert.equal(recs.length, 1);
    const reason = String(recs[0]!.session.endReason);
    assert.ok(reason.startsWith('refused: the host key of the target of connection "box" has changed'), reason);
    assert.ok(reason.includes(pinned) && reason.includes(offered), reason);
    const denied: Data = oneEvent(recs[0]!, 'access.denied');
    assert.ok(String(denied.message).includes(offered));
    assert.equal(eventsOf(recs[0]!, 'ssh.exec').length, 0, 'nothing ran');
  });
});
