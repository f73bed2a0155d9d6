// Revocation and expiry end open sessions, on every engine, within seconds: a token's expiry,
// `token revoke`, `revoke` of the grant, a group membership removed, `identity rm`,
// `connection rm`, a connection's --max-session, and `sessions kill`. Real clients: psql (which
// must print the FATAL 57P01 message), OpenSSH (which must print the disconnect reason) and git
// over HTTP (the next request is 401). The recordings say why each session ended.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createServer } from 'node:http';
import { startPgCluster, type PgCluster } from '../support/pg-cluster.ts';
import { withAskpass } from '../support/ssh-client.ts';
import { api, eventsOf, sessionIds, waitForRecording, type Recording } from '../support/recordings.ts';
import { sleep, startSsh, startSshWorld, type SshWorld } from '../ssh/helpers.ts';
import type { SessionView } from '../../src/cli/format.ts';

let w: SshWorld;
let pg: PgCluster;

before(async () => {
  [w, pg] = await Promise.all([startSshWorld(), startPgCluster()]);
  await w.gw.setupPostgres({ identity: 'alice', connection: 'app', cluster: pg });
});

after(async () => {
  await w?.stop();
  await pg?.stop();
});

async function issue(identity: string, ttl = '1h'): Promise<{ token: string; id: string }> {
  const r = await w.gw.cli(['token', 'issue', identity, '--ttl', ttl]);
  assert.equal(r.code, 0, r.stderr);
  return { token: r.stdout.trim().split('\n').pop()!, id: /token (tok_\S+) for/.exec(r.stderr)![1]! };
}

function cleanEnv(extra: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('PG')) env[k] = v;
  return { ...env, PGCONNECT_TIMEOUT: '10', ...extra };
}

interface Client {
  stdin(text: string): void;
  stdout(): string;
  stderr(): string;
  exited: Promise<number | null>;
  stop(): void;
}

/** psql through the gateway, reading statements from a pipe that stays open. */
function psql(connection: string, identity: string, token: string, extra = ''): Client {
  const child = spawn('psql', [w.gw.dsn(connection, identity, extra), '-w', '-XAt'], { env: cleanEnv({ PGPASSWORD: token }), stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (c: Buffer) => { out += c.toString(); });
  child.stderr.on('data', (c: Buffer) => { err += c.toString(); });
  child.stdin.on('error', () => {});
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  return { stdin: (t) => child.stdin.write(t), stdout: () => out, stderr: () => err, exited, stop: () => child.kill('SIGKILL') };
}

async function waitFor(what: string, pred: () => boolean, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

/** Resolves with the exit code, or fails when the client is still running after `ms`. */
async function exitsWithin(c: { exited: Promise<number | null>; stop(): void | Promise<void> }, ms: number, what: string): Promise<number | null> {
  const timer = new Promise<'running'>((r) => setTimeout(() => r('running'), ms));
  const result = await Promise.race([c.exited, timer]);
  if (result === 'running') {
    await c.stop();
    assert.fail(`${what}: the client was still connected ${ms} ms later`);
  }
  return result;
}

/** The open session of `identity` started since `beforeIds`, once it has run a statement / command. */
async function openSession(beforeIds: Set<string>, identity: string): Promise<Recording> {
  return waitForRecording(w.gw, beforeIds, (r) => r.session.identity.name === identity && r.session.endedAt === null
    && r.events.some((e) => e.type === 'query' || e.type === 'ssh.exec' || e.type === 'ssh.shell' || e.type === 'exec'));
}

async function ended(id: string, timeoutMs = 10_000): Promise<Recording> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = await api<Recording>(w.gw, `/api/v1/sessions/${id}`);
    if (r.session.endedAt !== null) return r;
    if (Date.now() > deadline) throw new Error(`session ${id} did not end`);
    await sleep(100);
  }
}

/** The recording says why: a session.terminated event and the end reason. */
function assertEndedBecause(r: Recording, reason: string | RegExp): void {
  const terminated = eventsOf(r, 'session.terminated');
  assert.equal(terminated.length, 1, `one session.terminated event: ${JSON.stringify(r.events.map((e) => e.type))}`);
  if (typeof reason === 'string') {
    assert.equal(r.session.endReason, reason);
    assert.equal(terminated[0]!.data.reason, reason);
  } else {
    assert.match(r.session.endReason ?? '', reason);
    assert.match(String(terminated[0]!.data.reason), reason);
  }
}

/** An identity with its own grant on the PostgreSQL connection and a token. */
async function pgIdentity(name: string, ttl = '1h'): Promise<{ token: string; id: string }> {
  await w.gw.cliOk(['identity', 'add', name, '--kind', 'agent']);
  await w.gw.cliOk(['grant', name, 'app']);
  return issue(name, ttl);
}

/** psql running a long statement; resolves once the gateway has recorded it. */
async function sleepingPsql(identity: string, token: string, connection = 'app'): Promise<{ client: Client; rec: Recording }> {
  const beforeIds = await sessionIds(w.gw);
  const client = psql(connection, identity, token);
  client.stdin('select pg_sleep(60);\n');
  const rec = await openSession(beforeIds, identity);
  return { client, rec };
}

test('psql with a --ttl 3s token is ended within seconds of the expiry, and told why (57P01)', async () => {
  const issuedAt = Date.now();
  const { token } = await pgIdentity('ttl_agent', '3s');
  const beforeIds = await sessionIds(w.gw);
  const client = psql('app', 'ttl_agent', token);
  client.stdin("select 'before-expiry';\n");
  await waitFor('the first answer', () => client.stdout().includes('before-expiry'));
  const open = await waitForRecording(w.gw, beforeIds, (r) => r.session.identity.name === 'ttl_agent');
  // Idle, the client sends nothing: the gateway ends the session by itself.
  const rec = await ended(open.session.id, 10_000);
  const endedAfter = Date.parse(rec.session.endedAt!) - issuedAt;
  assert.ok(endedAfter >= 3000 && endedAfter < 6500, `ended ${endedAfter} ms after the token was issued (ttl 3 s)`);
  assertEndedBecause(rec, 'token expired');
  client.stdin("select 'after-expiry';\n");
  const code = await exitsWithin(client, 10_000, 'psql after expiry');
  assert.notEqual(code, 0);
  assert.match(client.stderr(), /FATAL: {2}terminating connection: token expired/);
  assert.ok(!client.stdout().includes('after-expiry'), 'nothing ran after the expiry');
  assert.equal(rec.events.filter((e) => e.type === 'query').length, 1, 'only the statement before the expiry is recorded');
});

test('token revoke ends an open psql (FATAL shown at once, running statement cancelled) and an open ssh session', async () => {
  const { token, id } = await pgIdentity('rev_agent');
  const { client, rec } = await sleepingPsql('rev_agent', token);
  const sshToken = await issue('alice');
  const beforeSsh = await sessionIds(w.gw);
  const ssh = startSsh(w.opts({ password: sshToken.token, env: withAskpass(sshToken.token) }), 'echo ssh-started; sleep 60');
  await ssh.waitForStdout('ssh-started');
  const sshOpen = await waitForRecording(w.gw, beforeSsh, (r) => r.session.protocol === 'ssh' && r.session.endedAt === null);

  const t0 = Date.now();
  const res = await fetch(`${w.gw.url}/api/v1/tokens/revoke`, {
    method: 'POST', headers: { authorization: `Bearer ${w.gw.adminToken}`, 'content-type': 'application/json' }, body: JSON.stringify({ id }),
  });
  assert.deepEqual(await res.json(), { revoked: 1, endedSessions: 1 }, 'the API says it ended the one session');
  await w.gw.cliOk(['token', 'revoke', sshToken.id]);

  const code = await exitsWithin(client, 5000, 'psql after token revoke');
  assert.notEqual(code, 0);
  assert.match(client.stderr(), /FATAL: {2}terminating connection: token revoked/);
  const sshExit = await exitsWithin({ exited: ssh.exited.then((e) => e.code), stop: () => ssh.stop() }, 5000, 'ssh after token revoke');
  assert.equal(sshExit, 255);
  assert.match(ssh.stderr(), /Received disconnect from .*: ?11: gatehouse: token revoked/);
  assert.ok(Date.now() - t0 < 6000);

  assertEndedBecause(await ended(rec.session.id), 'token revoked');
  assertEndedBecause(await ended(sshOpen.session.id), 'token revoked');
  // The running statement was cancelled on the target, not left to sleep out its 60 s.
  const deadline = Date.now() + 5000;
  let backends = '';
  while ((backends = await pg.sql("select count(*) from pg_stat_activity where query = 'select pg_sleep(60);'")) !== '0' && Date.now() < deadline) await sleep(100);
  assert.equal(backends, '0', 'the target no longer runs the revoked session\'s statement');
});

test('revoke of the grant ends the open psql and ssh sessions it admitted', async () => {
  const { token } = await pgIdentity('grant_agent');
  const { client, rec } = await sleepingPsql('grant_agent', token);
  const beforeSsh = await sessionIds(w.gw);
  const ssh = startSsh(w.opts(), 'echo ssh-started; sleep 60');
  await ssh.waitForStdout('ssh-started');
  const sshOpen = await waitForRecording(w.gw, beforeSsh, (r) => r.session.protocol === 'ssh' && r.session.endedAt === null);
  try {
    await w.gw.cliOk(['revoke', 'grant_agent', 'app']);
    await w.gw.cliOk(['revoke', 'alice', 'box']);
    await exitsWithin(client, 5000, 'psql after revoke');
    assert.match(client.stderr(), /FATAL: {2}terminating connection: access revoked: identity grant_agent has no connect grant on connection app/);
    assert.equal(await exitsWithin({ exited: ssh.exited.then((e) => e.code), stop: () => ssh.stop() }, 5000, 'ssh after revoke'), 255);
    assert.match(ssh.stderr(), /gatehouse: access revoked: identity alice has no connect grant on connection box/);
    assertEndedBecause(await ended(rec.session.id), /^access revoked: identity grant_agent has no connect grant on connection app/);
    assertEndedBecause(await ended(sshOpen.session.id), /^access revoked: identity alice has no connect grant on connection box/);
  } finally {
    await w.gw.cliOk(['grant', 'alice', 'box']);
  }
});

test('a session stays open when another grant still allows it (revoke of a direct grant, group grant remains)', async () => {
  const { token } = await pgIdentity('both_agent');
  await w.gw.cliOk(['group', 'add', 'pg-users']);
  await w.gw.cliOk(['group', 'member', 'add', 'pg-users', 'both_agent']);
  await w.gw.cliOk(['grant', 'group:pg-users', 'app']);
  const beforeIds = await sessionIds(w.gw);
  const client = psql('app', 'both_agent', token);
  client.stdin("select 'one';\n");
  await waitFor('the first answer', () => client.stdout().includes('one'));
  await w.gw.cliOk(['revoke', 'both_agent', 'app']);
  await sleep(1500);
  client.stdin("select 'still-open';\n");
  await waitFor('the second answer', () => client.stdout().includes('still-open'));
  // Removing the membership takes the last grant away.
  await w.gw.cliOk(['group', 'member', 'rm', 'pg-users', 'both_agent']);
  const [s] = (await api<SessionView[]>(w.gw, '/api/v1/sessions?identity=both_agent')).filter((x) => !beforeIds.has(x.id));
  assertEndedBecause(await ended(s!.id, 5000), /^access revoked: identity both_agent has no connect grant on connection app/);
  client.stdin("select 'gone';\n");
  await exitsWithin(client, 5000, 'psql after the membership went');
  assert.match(client.stderr(), /terminating connection: access revoked/);
  assert.ok(!client.stdout().includes('gone'));
});

test('identity rm and connection rm end the open sessions they admitted', async () => {
  const { token } = await pgIdentity('doomed_agent');
  const first = await sleepingPsql('doomed_agent', token);
  await w.gw.cliOk(['identity', 'rm', 'doomed_agent']);
  await exitsWithin(first.client, 5000, 'psql after identity rm');
  assert.match(first.client.stderr(), /terminating connection: identity removed/);
  assertEndedBecause(await ended(first.rec.session.id), 'identity removed');

  await w.gw.setupPostgres({ identity: 'alice', connection: 'app2', cluster: pg });
  const tok = await issue('alice');
  const second = await sleepingPsql('alice', tok.token, 'app2');
  await w.gw.cliOk(['connection', 'rm', 'app2']);
  await exitsWithin(second.client, 5000, 'psql after connection rm');
  assert.match(second.client.stderr(), /terminating connection: connection removed/);
  assertEndedBecause(await ended(second.rec.session.id), 'connection removed');
});

test('a connection with --max-session ends its sessions when the lifetime is up, whatever the token says', async () => {
  await w.gw.cliOk(['connection', 'add', 'brief', '--type', 'postgres', '--host', pg.host, '--port', String(pg.port), '--database', 'app',
    '--user', 'scram_user', '--password-env', 'PW', '--max-session', '2s'], { env: { PW: 'scram-secret' } });
  await w.gw.cliOk(['grant', 'alice', 'brief']);
  const list = JSON.parse(await w.gw.cliOk(['connection', 'list', '--json'])) as Array<{ name: string; options: { maxSessionSeconds?: number } }>;
  assert.equal(list.find((c) => c.name === 'brief')?.options.maxSessionSeconds, 2);
  const tok = await issue('alice');
  const { client, rec } = await sleepingPsql('alice', tok.token, 'brief');
  await exitsWithin(client, 6000, 'psql past the maximum session lifetime');
  assert.match(client.stderr(), /terminating connection: maximum session lifetime of connection brief \(2s\) reached/);
  const r = await ended(rec.session.id);
  assertEndedBecause(r, 'maximum session lifetime of connection brief (2s) reached');
  const lasted = Date.parse(r.session.endedAt!) - Date.parse(r.session.startedAt);
  assert.ok(lasted >= 2000 && lasted < 4500, `lasted ${lasted} ms`);
  const bad = await w.gw.cli(['connection', 'add', 'x', '--type', 'postgres', '--host', pg.host, '--database', 'app', '--user', 'u', '--max-session', 'soon']);
  assert.notEqual(bad.code, 0);
  assert.match(bad.stderr, /--max-session: invalid duration "soon"/);
});

test('sessions kill ends an open ssh session and an open psql (administrators only); the recording says who', async () => {
  const beforeSsh = await sessionIds(w.gw);
  const ssh = startSsh(w.opts(), 'echo ssh-started; sleep 60');
  await ssh.waitForStdout('ssh-started');
  const sshOpen = await waitForRecording(w.gw, beforeSsh, (r) => r.session.protocol === 'ssh' && r.session.endedAt === null);

  const { token } = await pgIdentity('kill_agent');
  const notAdmin = await w.gw.cli(['sessions', 'kill', sshOpen.session.id], { token });
  assert.notEqual(notAdmin.code, 0);
  assert.match(notAdmin.stderr, /is not an administrator/);

  assert.match(await w.gw.cliOk(['sessions', 'kill', sshOpen.session.id]), new RegExp(`^session ${sshOpen.session.id} ended \\(ended by administrator admin\\)$`, 'm'));
  assert.equal(await exitsWithin({ exited: ssh.exited.then((e) => e.code), stop: () => ssh.stop() }, 5000, 'ssh after sessions kill'), 255);
  assert.match(ssh.stderr(), /gatehouse: ended by administrator admin/);
  assertEndedBecause(await ended(sshOpen.session.id), 'ended by administrator admin');

  const { client, rec } = await sleepingPsql('kill_agent', token);
  await w.gw.cliOk(['sessions', 'kill', rec.session.id]);
  await exitsWithin(client, 5000, 'psql after sessions kill');
  assert.match(client.stderr(), /FATAL: {2}terminating connection: ended by administrator admin/);
  assertEndedBecause(await ended(rec.session.id), 'ended by administrator admin');

  const again = await w.gw.cli(['sessions', 'kill', rec.session.id]);
  assert.notEqual(again.code, 0);
  assert.match(again.stderr, /has ended already/);
  const unknown = await w.gw.cli(['sessions', 'kill', 's_nosuchsession']);
  assert.match(unknown.stderr, /does not exist/);
});

test('a Git HTTP request in flight when its token is revoked is answered 401 and the target request aborted; the next is refused', async () => {
  // A target that takes the request and does not answer (a slow server).
  let targetClosed = false;
  let arrived!: () => void;
  const got = new Promise<void>((r) => { arrived = r; });
  const slow = createServer((req) => {
    req.on('close', () => { targetClosed = true; });
    arrived();
  });
  await new Promise<void>((r) => slow.listen(0, '127.0.0.1', () => r()));
  try {
    const port = (slow.address() as { port: number }).port;
    await w.gw.cliOk(['connection', 'add', 'slowgit', '--type', 'git-http', '--host', '127.0.0.1', '--port', String(port)]);
    await w.gw.cliOk(['grant', 'alice', 'slowgit']);
    const { token, id } = await issue('alice');
    const url = `${w.gw.url}/git/slowgit/app.git/info/refs?service=git-upload-pack`;
    const headers = { authorization: 'Basic ' + Buffer.from(`x:${token}`).toString('base64') };
    const beforeIds = await sessionIds(w.gw);
    const pending = fetch(url, { headers });
    await got;
    const open = await waitForRecording(w.gw, beforeIds, (r) => r.session.protocol === 'git-http' && r.session.endedAt === null);
    await w.gw.cliOk(['token', 'revoke', id]);
    const res = await Promise.race([pending, sleep(5000).then(() => null)]);
    assert.ok(res, 'the request in flight was answered within seconds');
    assert.equal(res.status, 401);
    assert.match(res.headers.get('www-authenticate') ?? '', /^Basic realm=/);
    assert.equal(await res.text(), 'gatehouse: session ended: token revoked\n');
    assertEndedBecause(await ended(open.session.id), 'token revoked');
    await waitFor('the request to the target to be aborted', () => targetClosed, 5000);
    const next = await fetch(url, { headers });
    assert.equal(next.status, 401);
    assert.equal(await next.text(), 'gatehouse: invalid token\n');
  } finally {
    slow.closeAllConnections();
    await new Promise<void>((r) => slow.close(() => r()));
  }
});
