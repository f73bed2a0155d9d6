// The exec command recogniser (issue-11 item 3): every spelling of a Git service is found, and
// nothing with shell syntax beyond one plain command passes as a Git exchange.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { canonicalGitCommand, recogniseExec, shellWords } from '../../src/engines/ssh/exec-command.ts';

const git = (service: string, repoPath: string, via: string[] = []) => ({ kind: 'git', service, repoPath, via });

test('words as a POSIX shell splits them: quotes, backslashes, concatenation', () => {
  assert.deepEqual(shellWords(`git-upload-pack 'team/it'\\''s.git'`), { words: ['git-upload-pack', "team/it's.git"], plain: [15, 0] });
  assert.deepEqual(shellWords(`a"b c"'d' e\\ f  "x\\"y\\$" \\\ng`).words, ['ab cd', 'e f', 'x"y$', 'g']);
  assert.deepEqual(shellWords(`''`).words, ['']);
});

test('the canonical spellings git clients send', () => {
  assert.deepEqual(recogniseExec("git-receive-pack '/srv/app.git'"), git('git-receive-pack', '/srv/app.git'));
  assert.deepEqual(recogniseExec("git upload-pack 'team/it'\\''s.git'"), git('git-upload-pack', "team/it's.git"));
  assert.deepEqual(recogniseExec('git-upload-archive repo.git'), git('git-upload-archive', 'repo.git'));
  assert.deepEqual(recogniseExec('  git-upload-pack\t"/a b.git"  '), git('git-upload-pack', '/a b.git'));
});

test('paths, env, exec, git options and shell wrappers resolve to the service they start', () => {
  assert.deepEqual(recogniseExec("/usr/bin/git-receive-pack '/srv/app.git'"), git('git-receive-pack', '/srv/app.git', ['/usr/bin/git-receive-pack']));
  assert.deepEqual(recogniseExec("env git-receive-pack '/srv/app.git'"), git('git-receive-pack', '/srv/app.git', ['env']));
  assert.deepEqual(recogniseExec("/usr/bin/env -i GIT_PROTOCOL=version=2 -u X -- git-upload-pack r.git"),
    git('git-upload-pack', 'r.git', ['/usr/bin/env -i GIT_PROTOCOL=version=2 -u X --']));
  assert.deepEqual(recogniseExec("git -c receive.denyNonFastForwards=false receive-pack '/srv/app.git'"),
    git('git-receive-pack', '/srv/app.git', ['git -c receive.denyNonFastForwards=false']));
  assert.deepEqual(recogniseExec("/usr/bin/git --git-dir=/x -C /srv --no-pager receive-pack app.git"),
    git('git-receive-pack', 'app.git', ['/usr/bin/git --git-dir=/x -C /srv --no-pager']));
  assert.deepEqual(recogniseExec("sh -c 'git-receive-pack /srv/app.git'"), git('git-receive-pack', '/srv/app.git', ['sh -c']));
  assert.deepEqual(recogniseExec(`bash -lc "exec env git -c a=b receive-pack '/srv/app.git'"`),
    git('git-receive-pack', '/srv/app.git', ['bash -lc', 'exec', 'env', 'git -c a=b']));
  assert.deepEqual(recogniseExec(`/bin/sh -c "sh -c 'git-upload-pack r'" argv0`), git('git-upload-pack', 'r', ['/bin/sh -c', 'sh -c']));
  assert.deepEqual(recogniseExec('GIT_DIR=/x exec git-receive-pack r'), git('git-receive-pack', 'r', ['GIT_DIR=/x', 'exec']));
  assert.deepEqual(recogniseExec('busybox sh -c "git-receive-pack r"'), git('git-receive-pack', 'r', ['busybox sh -c']));
});

test('shell syntax beyond one plain command is never a Git exchange', () => {
  for (const line of [
    'git-upload-pack "$(cmd)"', 'git-upload-pack `id`', 'git-upload-pack $HOME/r', 'git-upload-pack r; id', 'git-upload-pack r && id',
    'git-upload-pack r | tee x', 'git-upload-pack r > /tmp/x', 'git-upload-pack < /dev/null r', 'git-upload-pack /srv/*.git',
    'git-upload-pack r?', 'git-upload-pack {a,b}', 'git-upload-pack ~/r', 'git-upload-pack r #x', "git-upload-pack 'r", 'git-upload-pack r\\',
    'git-upload-pack r\nid', 'git-upload-pack r &', '(git-upload-pack r)', "sh -c 'git-upload-pack r; id'", "sh -c 'git-upload-pack \"$(id)\"'",
    '! git-receive-pack r',
  ]) {
    const r = recogniseExec(line);
    assert.equal(r.kind, 'exec', line);
    assert.ok(r.kind === 'exec' && r.shellSyntax, `${line}: shell syntax not reported`);
  }
  const r = recogniseExec("git-receive-pack 'r'; true");
  assert.ok(r.kind === 'exec' && r.mentionsReceivePack && r.shellSyntax);
});

test('anything else is a plain exec, and says when it names receive-pack', () => {
  for (const line of ['ls -l', 'git-receive-pack', 'git-receive-pack a b', 'git-upload-pack --advertise-refs r', 'git-upload-pack -- r', 'git log',
    "git -c x receive-pack", 'env -S "git-receive-pack r"', 'sh script.sh', 'sh', 'sh -o pipefail -c "git-receive-pack r"', 'nice git-receive-pack r',
    "'GIT_DIR'=x git-receive-pack r", 'xgit-receive-pack r', '']) {
    const r = recogniseExec(line);
    assert.equal(r.kind, 'exec', line);
    assert.ok(r.kind === 'exec' && !r.shellSyntax, `${line}: ${JSON.stringify(r)}`);
  }
  assert.deepEqual(recogniseExec('nice git-receive-pack r'), { kind: 'exec', mentionsReceivePack: true });
  assert.deepEqual(recogniseExec('env -S "git-receive-pack r"'), { kind: 'exec', mentionsReceivePack: true });
  assert.deepEqual(recogniseExec('ls -l'), { kind: 'exec', mentionsReceivePack: false });
});

test('an SFTP server run as a command is SFTP', () => {
  assert.deepEqual(recogniseExec('/usr/lib/openssh/sftp-server'), { kind: 'sftp', program: '/usr/lib/openssh/sftp-server' });
  assert.deepEqual(recogniseExec('/usr/lib/openssh/sftp-server -e -l INFO'), { kind: 'sftp', program: '/usr/lib/openssh/sftp-server' });
  assert.deepEqual(recogniseExec('internal-sftp'), { kind: 'sftp', program: 'internal-sftp' });
  assert.deepEqual(recogniseExec("sh -c 'exec /usr/libexec/sftp-server'"), { kind: 'sftp', program: '/usr/libexec/sftp-server' });
  assert.equal(recogniseExec('/usr/lib/openssh/sftp-server > /tmp/x').kind, 'exec');
});

test('the canonical command quotes the repository for the target shell', () => {
  assert.equal(canonicalGitCommand('git-receive-pack', "/srv/it's.git"), "git-receive-pack '/srv/it'\\''s.git'");
  assert.deepEqual(recogniseExec(canonicalGitCommand('git-upload-pack', "a'b $(x)")), git('git-upload-pack', "a'b $(x)"));
});
