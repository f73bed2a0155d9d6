// Tests of the SSH / terminal / git fixtures themselves, against the real OpenSSH, tmux and git.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PASSWORD_USER, generateClientKey, startSshd } from './sshd.ts';
import type { Sshd } from './sshd.ts';
import { askpassPrompts, gitSshEnv, runScp, runSftp, runSsh, sshArgs, sshUrl, withAskpass } from './ssh-client.ts';
import type { SshOptions, SshResult } from './ssh-client.ts';
import { startTerminal } from './terminal.ts';
import type { Terminal } from './terminal.ts';
import { createBareRepo, gitIn, gitRun, makeCommit, startGitHttpServer } from './git-servers.ts';
import type { GitHttpServer } from './git-servers.ts';

function ok(r: SshResult, what: string): string {
  assert.equal(r.code, 0, `${what} failed (code ${r.code}):\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  return r.stdout;
}

describe('sshd fixture', () => {
  let sshd: Sshd | undefined;
  let work: string = '';

  before(async () => {
    sshd = await startSshd();
    work = mkdtempSync(join(tmpdir(), 'gatehouse-ssh-infra-'));
  });

  after(async () => {
    await sshd?.stop();
    if (work !== '') rmSync(work, { recursive: true, force: true });
  });

  const s = (): Sshd => {
    assert.ok(sshd, 'sshd did not start');
    return sshd;
  };
  const keyLogin = (): SshOptions => ({ port: s().port, user: s().user, identityFile: s().clientKeyFile });

  it('accepts the client key and runs a command', async () => {
    assert.equal(s().host, '127.0.0.1');
    assert.match(s().hostKeyPublic, /^ssh-ed25519 AAAA\S+$/);
    assert.match(s().hostKeyFingerprint, /^SHA256:[A-Za-z0-9+/]{43}$/);
    assert.equal(ok(await runSsh(keyLogin(), 'echo ok'), 'ssh').trim(), 'ok');
    assert.match(s().logs(), new RegExp(`Accepted publickey for ${s().user} from 127\\.0\\.0\\.1`));
  });

  it('propagates the exit status and stdin', async () => {
    assert.equal((await runSsh(keyLogin(), 'exit 3')).code, 3);
    assert.equal(ok(await runSsh(keyLogin(), ['tr', 'a-z', 'A-Z'], 'hello\n'), 'ssh tr').trim(), 'HELLO');
  });

  it('verifies the host key from known_hosts and notices a replaced host key', async () => {
    const knownHosts: string = join(work, 'known_hosts');
    writeFileSync(knownHosts, s().knownHostsLine() + '\n');
    const strict: SshOptions = { ...keyLogin(), knownHostsFile: knownHosts };
    assert.equal(ok(await runSsh(strict, 'echo trusted'), 'ssh strict').trim(), 'trusted');

    const oldFingerprint: string = s().hostKeyFingerprint;
    await s().restartWithNewHostKey();
    assert.notEqual(s().hostKeyFingerprint, oldFingerprint);
    const r: SshResult = await runSsh(strict, 'echo should-not-run');
    assert.equal(r.code, 255);
    assert.match(r.stderr, /REMOTE HOST IDENTIFICATION HAS CHANGED/);
    assert.ok(r.stderr.includes(s().hostKeyFingerprint), r.stderr);
    assert.doesNotMatch(r.stdout, /should-not-run/);
  });

  it('can serve a given host key (hostKeyFile)', async () => {
    const key = await generateClientKey(work, 'ed25519', 'fixed_host_key');
    const fixed: Sshd = await startSshd({ hostKeyFile: key.privateKeyFile });
    try {
      assert.equal(fixed.hostKeyPublic, key.publicKey.split(' ').slice(0, 2).join(' '));
      const knownHosts: string = join(work, 'known_hosts_fixed');
      writeFileSync(knownHosts, fixed.knownHostsLine() + '\n');
      const r: SshResult = await runSsh({ port: fixed.port, identityFile: fixed.clientKeyFile, knownHostsFile: knownHosts }, 'echo fixed');
      assert.equal(ok(r, 'ssh fixed host key').trim(), 'fixed');
    } finally {
      await fixed.stop();
      await fixed.stop(); // idempotent
    }
  });

  it('logs in with a password through SSH_ASKPASS', async (t) => {
    const login = s().passwordLogin;
    if (login === undefined) return t.skip(s().passwordSkipReason);
    const askpass = withAskpass(login.password);
    const r: SshResult = await runSsh({ port: s().port, user: login.user, password: login.password, env: askpass }, 'id -un');
    assert.equal(ok(r, 'password ssh').trim(), PASSWORD_USER);
    assert.match(askpassPrompts(askpass).join('\n'), /password:/i);
    assert.match(s().logs(), new RegExp(`Accepted password for ${PASSWORD_USER}`));

    const wrong: SshResult = await runSsh({ port: s().port, user: login.user, password: 'wrong-password' }, 'id -un');
    assert.equal(wrong.code, 255);
    assert.match(wrong.stderr, /Permission denied/);
    // The shared authorized_keys works for this user too.
    assert.equal(ok(await runSsh({ ...keyLogin(), user: login.user }, 'id -un'), 'key ssh').trim(), PASSWORD_USER);
  });

  it('answers keyboard-interactive prompts through SSH_ASKPASS (UsePAM yes)', async (t) => {
    if (s().passwordLogin === undefined) return t.skip(s().passwordSkipReason);
    const pam: Sshd = await startSshd({ pam: true });
    try {
      const login = pam.passwordLogin!;
      const askpass = withAskpass(login.password);
      const r: SshResult = await runSsh(
        { port: pam.port, user: login.user, password: login.password, preferredAuthentications: 'keyboard-interactive', env: askpass },
        'id -un',
      );
      // The askpass answer is what authenticates: PAM asked "Password:" through keyboard-interactive.
      assert.match(pam.logs(), new RegExp(`Accepted keyboard-interactive/pam for ${PASSWORD_USER}`), pam.logs());
      assert.match(askpassPrompts(askpass).join('\n'), /Password:/);
      if (r.code !== 0 && /pam_open_session|pam_setcred|PAM session/i.test(pam.logs())) {
        // Some containers refuse PAM's session modules (pam_loginuid); authentication still worked.
        t.diagnostic(`PAM session setup failed here, command not run:\n${pam.logs()}`);
      } else {
        assert.equal(ok(r, 'keyboard-interactive ssh').trim(), PASSWORD_USER);
      }
    } finally {
      await pam.stop();
    }
    assert.equal(existsSync(pam.dir), false);
  });

  it('transfers files with sftp (put/get) and scp (put)', async () => {
    const local: string = join(work, 'up.txt');
    const remoteDir: string = mkdtempSync(join(tmpdir(), 'gatehouse-ssh-remote-'));
    try {
      writeFileSync(local, 'sftp payload\n');
      ok(await runSftp(keyLogin(), [`put ${local} ${remoteDir}/a.txt`, `get ${remoteDir}/a.txt ${work}/back.txt`, `ls ${remoteDir}`]), 'sftp');
      assert.equal(readFileSync(join(remoteDir, 'a.txt'), 'utf8'), 'sftp payload\n');
      assert.equal(readFileSync(join(work, 'back.txt'), 'utf8'), 'sftp payload\n');
      // A failing batch command fails sftp.
      assert.notEqual((await runSftp(keyLogin(), [`get ${remoteDir}/missing ${work}/x`])).code, 0);

      ok(await runScp(keyLogin(), [local, `remote:${remoteDir}/b.txt`]), 'scp');
      assert.equal(readFileSync(join(remoteDir, 'b.txt'), 'utf8'), 'sftp payload\n');
    } finally {
      rmSync(remoteDir, { recursive: true, force: true });
    }
  });

  it('drives an interactive ssh -tt session in tmux and propagates a resize', async (t) => {
    // A non-root sshd must chgrp the pty to `tty`, which fails unless devpts already assigns it.
    if (process.getuid?.() !== 0) return t.skip('ssh -tt against a non-root sshd needs devpts gid=5; run as root');
    const term: Terminal = await startTerminal({
      command: ['ssh', '-tt', ...sshArgs(keyLogin()), `${s().user}@${s().host}`],
      cols: 80,
      rows: 24,
    });
    try {
      // Markers are computed by the remote shell, so the echoed command line never matches.
      await term.send('echo "READY-$((40+2))"\n');
      await term.waitFor('READY-42');
      await term.send('echo "S0:$(stty size)"\n');
      await term.waitFor('S0:24 80');

      await term.resize(100, 30);
      assert.deepEqual(await term.size(), { cols: 100, rows: 30 });
      // ssh forwards the change (SIGWINCH -> window-change) asynchronously: ask until it shows.
      let seen: boolean = false;
      for (let i: number = 1; i <= 20 && !seen; i++) {
        await term.send(`echo "S${i}:$(stty size)"\n`);
        seen = (await term.waitFor(new RegExp(`S${i}:\\d+ \\d+`))).includes(`S${i}:30 100`);
      }
      assert.ok(seen, await term.capture({ history: true }));

      const ms: number = await term.measureEcho('echo latency-probe');
      console.log(`# keystroke echo through ssh -tt + tmux: ${ms.toFixed(1)} ms`);
      await term.sendKeys('C-u');
      await term.send('exit 7\n');
      assert.equal(await term.waitExit(), 7);
    } finally {
      await term.kill();
    }
  });

  it('serves git clone and push over ssh (GIT_SSH_COMMAND)', async () => {
    const repo = await createBareRepo(join(work, 'repos'), 'ssh-repo', { initialCommits: 2 });
    const env: NodeJS.ProcessEnv = gitSshEnv({ identityFile: s().clientKeyFile });
    const url: string = sshUrl(s(), repo.path);
    await gitIn(work, ['clone', '-q', url, 'ssh-clone'], env);
    const clone: string = join(work, 'ssh-clone');
    assert.equal(await gitIn(clone, ['rev-parse', 'HEAD']), repo.head);

    const pushed: string = await makeCommit(clone, 'over-ssh.txt', 'pushed over ssh\n', 'ssh push');
    await gitIn(clone, ['push', '-q', 'origin', 'main'], env);
    assert.equal(await gitIn(repo.path, ['rev-parse', 'main']), pushed);

    // Protocol v2 needs GIT_PROTOCOL through sshd's AcceptEnv.
    const v2: string = (await gitRun(clone, ['-c', 'protocol.version=2', 'ls-remote', 'origin'], { ...env, GIT_TRACE_PACKET: '1' })).stderr;
    assert.match(v2, /< version 2$/m);
  });
});

describe('git http server fixture', () => {
  let work: string = '';
  let server: GitHttpServer | undefined;

  before(async () => {
    work = mkdtempSync(join(tmpdir(), 'gatehouse-git-http-'));
    server = await startGitHttpServer({ root: join(work, 'repos') });
  });

  after(async () => {
    await server?.stop();
    if (work !== '') rmSync(work, { recursive: true, force: true });
  });

  const srv = (): GitHttpServer => {
    assert.ok(server, 'server did not start');
    return server;
  };

  it('clones with protocol v2 and v0, pushes (normal, --force, chunked, branch delete) and fetches', async () => {
    const repo = await createBareRepo(join(work, 'repos'), 'http-repo', { initialCommits: 3 });
    const url: string = `${srv().url}/${repo.name}`;
    const refs = (): Promise<string> => gitIn(repo.path, ['for-each-ref', '--format=%(refname) %(objectname)']);

    for (const v of [2, 0]) {
      const from: number = srv().requests.length;
      await gitIn(work, ['-c', `protocol.version=${v}`, 'clone', '-q', url, `clone-v${v}`]);
      assert.equal(await gitIn(join(work, `clone-v${v}`), ['rev-parse', 'HEAD']), repo.head);
      const reqs = srv().requests.slice(from);
      assert.deepEqual(
        reqs.map((r) => `${r.method} ${r.path} ${r.status}`),
        [`GET /${repo.name}/info/refs?service=git-upload-pack 200`, ...(v === 2 ? [`POST /${repo.name}/git-upload-pack 200`] : []), `POST /${repo.name}/git-upload-pack 200`],
      );
      assert.equal(reqs[0].gitProtocol, v === 2 ? 'version=2' : undefined);
    }

    const clone: string = join(work, 'clone-v2');
    const c4: string = await makeCommit(clone, 'four.txt', '4\n', 'commit 4');
    await gitIn(clone, ['push', '-q', 'origin', 'main']);
    assert.equal(await gitIn(repo.path, ['rev-parse', 'main']), c4);
    assert.ok(srv().requests.some((r) => r.method === 'POST' && r.path === `/${repo.name}/git-receive-pack` && r.status === 200));

    // Rewrite history: a plain push is rejected, --force goes through.
    await gitIn(clone, ['reset', '-q', '--hard', 'HEAD~2']);
    const rewritten: string = await makeCommit(clone, 'rewritten.txt', 'r\n', 'rewritten');
    assert.notEqual((await gitRun(clone, ['push', '-q', 'origin', 'main'])).code, 0);
    await gitIn(clone, ['push', '-q', '--force', 'origin', 'main']);
    assert.equal(await gitIn(repo.path, ['rev-parse', 'main']), rewritten);

    // More than http.postBuffer (1 MiB): the client streams the pack with chunked encoding.
    const big: string = await makeCommit(clone, 'big.bin', randomBytes(2 << 20).toString('base64'), 'big');
    await gitIn(clone, ['push', '-q', 'origin', 'main']);
    assert.equal(await gitIn(repo.path, ['rev-parse', 'main']), big);

    await gitIn(clone, ['push', '-q', 'origin', 'main:refs/heads/feature']);
    assert.match(await refs(), new RegExp(`refs/heads/feature ${big}`));
    await gitIn(clone, ['push', '-q', 'origin', ':feature']);
    assert.doesNotMatch(await refs(), /refs\/heads\/feature/);

    // The v0 clone fetches the rewritten history.
    const old: string = join(work, 'clone-v0');
    await gitIn(old, ['-c', 'protocol.version=0', 'fetch', '-q', 'origin']);
    assert.equal(await gitIn(old, ['rev-parse', 'origin/main']), big);
    assert.equal(srv().logs().includes('fatal'), false, srv().logs());
  });

  it('requires basic auth when configured', async () => {
    const auth = { user: 'alice', password: 's3cret' };
    const guarded: GitHttpServer = await startGitHttpServer({ root: join(work, 'repos'), auth });
    try {
      const repo = await createBareRepo(join(work, 'repos'), 'guarded', { initialCommits: 1 });
      const anon = await gitRun(work, ['clone', '-q', `${guarded.url}/${repo.name}`, 'guarded-anon']);
      assert.notEqual(anon.code, 0);
      assert.match(anon.stderr, /Authentication failed|could not read Username/);
      assert.equal(guarded.requests[0].status, 401);

      const withCreds: string = guarded.url.replace('http://', `http://${auth.user}:${auth.password}@`);
      await gitIn(work, ['clone', '-q', `${withCreds}/${repo.name}`, 'guarded-ok']);
      assert.equal(await gitIn(join(work, 'guarded-ok'), ['rev-parse', 'HEAD']), repo.head);
      assert.ok(guarded.requests.some((r) => r.user === 'alice' && r.status === 200));
    } finally {
      await guarded.stop();
      await guarded.stop(); // idempotent
    }
  });
});

describe('terminal fixture', () => {
  it('reports the exit status, the initial size and cleans up', async () => {
    const term: Terminal = await startTerminal({
      command: ['sh', '-c', 'echo "size:$(stty size) term:$TERM"; read x; exit "$x"'],
      cols: 90,
      rows: 20,
    });
    try {
      await term.waitFor(/size:20 90 term:(tmux-256color|screen)$/m);
      await term.send('5\n');
      assert.equal(await term.waitExit(), 5);
    } finally {
      await term.kill();
      await term.kill(); // idempotent
    }
    assert.equal(existsSync(term.socket), false);
  });
});
