// SSH and Git over SSH through a connector: a connection that names a connector (`--via`) reaches
// its target through the connector's outbound tunnel, and is recorded exactly as a direct one.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { enrollConnector, type ConnectorProcess } from '../support/connector.ts';
import { createBareRepo, gitEnv, gitIn, makeCommit } from '../support/git-servers.ts';
import { gitSshEnv, sshUrl } from '../support/ssh-client.ts';
import { eventsOf, oneEvent, recordOne, runSshRaw, startSshWorld, type SshWorld } from './helpers.ts';
import { mkdtempSync } from 'node:fs';
import { join } from 'node:path';

let world: SshWorld;
let connector: ConnectorProcess;

before(async () => {
  world = await startSshWorld();
  connector = await enrollConnector(world.gw, 'edge', [`${world.sshd.host}:${world.sshd.port}`]);
  await world.addConnection('via-edge', ['--via', 'edge', '--protect', 'main', '--no-git-only']);
});

after(async () => {
  await connector?.kill('SIGTERM');
  await world?.stop();
});

test('a command through a connector runs on the target and is recorded with its exit status', async () => {
  const { rec, result } = await recordOne(world.gw, () => runSshRaw(world.opts({ connection: 'via-edge' }), 'echo through-the-tunnel; exit 5'));
  assert.equal(result.code, 5, result.stderr);
  assert.equal(result.stdout.toString(), 'through-the-tunnel\n');
  assert.equal(rec.session.connection, 'via-edge');
  const exit = oneEvent(rec, 'ssh.exit');
  assert.equal(exit.code, 5);
  assert.equal((exit.stdout as { sample: string }).sample, 'through-the-tunnel\n');
});

test('git clone and a refused forced push through a connector', async () => {
  const repo = await createBareRepo(world.work, 'tunnel', { initialCommits: 2 });
  const env = { ...gitEnv(), ...gitSshEnv({ identityFile: world.key.privateKeyFile }) };
  const url = sshUrl({ port: world.gw.sshPort, user: 'via-edge' }, repo.path);
  const clone = join(mkdtempSync(join(world.work, 'clone-')), 'w');
  await recordOne(world.gw, () => gitIn(world.work, ['clone', '-q', url, clone], env));
  assert.equal((await gitIn(clone, ['rev-parse', 'HEAD'], env)).trim(), repo.head);

  await gitIn(clone, ['reset', '-q', '--hard', 'HEAD~1'], env);
  await makeCommit(clone, 'other.txt', 'rewrite', 'rewritten history');
  const { rec } = await recordOne(world.gw, async () => {
    const r = await gitIn(clone, ['push', '--force', 'origin', 'main'], env).then(() => null, (err: Error) => err.message);
    assert.match(String(r), /\[remote rejected\] main -> main \(protected ref: non-fast-forward update refused by gatehouse\)/);
  });
  const push = eventsOf(rec, 'git.push')[0]!.data as { verdict: string; updates: Array<{ class: string }> };
  assert.equal(push.verdict, 'refused');
  assert.equal(push.updates[0]!.class, 'rewrite');
  assert.equal((await gitIn(repo.path, ['rev-parse', 'main'], env)).trim(), repo.head, 'the target is unchanged');
});
