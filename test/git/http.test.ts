// Git over smart HTTP through the gateway (/git/<connection>/<repo>), with real git clients and a
// real `git http-backend` target: clone/fetch/push relayed and recorded (every request is its own
// session), protected refs refusing rewrites and deletions before anything reaches the target,
// the fast-forward probe over HTTP, token sign-in (wrong, missing, expired, revoked, no grant),
// and a target that requires its own basic auth (the connection's stored credential).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startTestGateway, type TestGateway } from '../support/gateway.ts';
import { run } from '../support/processes.ts';
import { createBareRepo, gitEnv, gitIn, makeCommit, startGitHttpServer, type BareRepo, type GitHttpServer } from '../support/git-servers.ts';
import {
  commitRandomFiles, eventsOf, failed, git, headOf, installPreReceiveLog, ok, oneEvent, packSizeFor, recordAll, refOf, sessionIds,
  newRecordings, sleep, updateFor, updatesOf, ZERO_ID, type Data, type Recording,
} from './helpers.ts';

const CONN = 'forge';
const AUTH_CONN = 'forge-auth';
const TEAM_CONN = 'team';
const REASON_NON_FF = 'protected ref: non-fast-forward update refused by gatehouse';
const REASON_DELETE = 'protected ref: deletion refused by gatehouse';
const REASON_NOT_APPLIED = 'not applied: another ref update in this push was refused by gatehouse';
const TARGET_USER = 'forge-bot';
const TARGET_PASSWORD = 'target-secret-42';

let gw: TestGateway;
let http: GitHttpServer;
let authHttp: GitHttpServer;
let work: string;
let srv: string;
let authSrv: string;
let token: string;

async function issueToken(identity: string, ttl = '1h'): Promise<string> {
  return (await gw.cliOk(['token', 'issue', identity, '--ttl', ttl])).trim().split('\n').pop()!;
}

before(async () => {
  work = mkdtempSync(join(tmpdir(), 'gatehouse-git-http-test-'));
  srv = join(work, 'srv');
  authSrv = join(work, 'srv-auth');
  [gw, http, authHttp] = await Promise.all([
    startTestGateway(),
    startGitHttpServer({ root: srv }),
    startGitHttpServer({ root: authSrv, auth: { user: TARGET_USER, password: TARGET_PASSWORD } }),
  ]);
  await gw.cliOk(['identity', 'add', 'alice', '--kind', 'human']);
  await gw.cliOk(['identity', 'add', 'bob', '--kind', 'human']);
  await gw.cliOk(['connection', 'add', CONN, '--type', 'git-http', '--host', '127.0.0.1', '--port', String(http.port),
    '--protect', 'refs/heads/main', '--protect', 'release/*']);
  await gw.cliOk(['connection', 'add', AUTH_CONN, '--type', 'git-http', '--host', '127.0.0.1', '--port', String(authHttp.port),
    '--user', TARGET_USER, '--password-env', 'TARGET_PW', '--protect', 'main'], { env: { TARGET_PW: TARGET_PASSWORD } });
  await gw.cliOk(['connection', 'add', TEAM_CONN, '--type', 'git-http', '--host', '127.0.0.1', '--port', String(http.port), '--base-path', '/team']);
  await gw.cliOk(['grant', 'alice', CONN]);
  await gw.cliOk(['grant', 'alice', AUTH_CONN]);
  await gw.cliOk(['grant', 'alice', TEAM_CONN]);
  token = await issueToken('alice');
});

after(async () => {
  await gw?.stop();
  await http?.stop();
  await authHttp?.stop();
  if (work) rmSync(work, { recursive: true, force: true });
});

const gwHostPort = (): string => gw.url.replace(/^http:\/\//, '');

/** The gateway URL of `repo` on `conn`, with `tok` as the basic-auth password (or none). */
function url(repo: BareRepo, tok: string | null = token, conn = CONN): string {
  return `http://${tok === null ? '' : `x:${tok}@`}${gwHostPort()}/git/${conn}/${repo.name}`;
}

/** A work clone of `repo` made straight from its path (not recorded), whose origin is the gateway. */
async function workClone(repo: BareRepo, name: string, conn = CONN): Promise<string> {
  const dir = join(work, name);
  await gitIn(work, ['clone', '-q', repo.path, dir]);
  await gitIn(dir, ['remote', 'set-url', 'origin', url(repo, token, conn)]);
  return dir;
}

/** Runs git in `dir`; returns its result and every event of the sessions its requests recorded. */
async function gitRecorded(dir: string, args: string[], env: NodeJS.ProcessEnv = {}) {
  return recordAll(gw, () => git(dir, args, env));
}

function rpcSessions(recs: Recording[], service: string): Recording[] {
  return recs.filter((r) => r.events.some((e) => e.type === 'git.command' && e.data.service === service && e.data.request === undefined));
}

function assertAllowedPush(d: Data): void {
  assert.equal(d.verdict, 'allowed', JSON.stringify(d));
  for (const u of updatesOf(d)) assert.equal(u.allowed, true, JSON.stringify(u));
}

function assertApplied(result: Data, refs: string[]): void {
  assert.equal(result.refusedByGateway, false, JSON.stringify(result));
  assert.equal(result.unpack, 'ok');
  assert.deepEqual(result.refs, refs.map((ref) => ({ ref, ok: true })));
  assert.equal(result.status, 200);
}

/** The git.push / git.push.result of the one push (the session with commands) in `events`. */
function pushEvents(events: Recording['events']): { push: Data; result: Data } {
  const pushes = eventsOf(events, 'git.push').filter((e) => (e.data.updates as unknown[]).length > 0);
  assert.equal(pushes.length, 1, `one push with commands; got ${JSON.stringify(eventsOf(events, 'git.push').map((e) => e.data))}`);
  const results = eventsOf(events, 'git.push.result').filter((e) => (e.data.refs as unknown[] | null)?.length);
  assert.equal(results.length, 1, `one push result with refs; got ${JSON.stringify(eventsOf(events, 'git.push.result').map((e) => e.data))}`);
  return { push: pushes[0].data, result: results[0].data };
}

describe('git over smart http through the gateway', () => {
  it('clones (v2 and v0), fetches and pushes with the token as password; each request is a recorded session', async () => {
    const repo = await createBareRepo(srv, 'basic', { initialCommits: 2 });
    const v2 = join(work, 'basic-v2');
    const c2 = await gitRecorded(work, ['clone', url(repo), v2]);
    ok(c2.result, 'clone (v2)');
    assert.equal(await headOf(v2), repo.head);
    for (const r of c2.recs) {
      assert.equal(r.session.protocol, 'git-http');
      assert.equal(r.session.identity.name, 'alice');
      assert.equal(r.session.connection, CONN);
      assert.equal(r.session.target.database, `/${repo.name}`);
    }
    const ad = oneEvent(c2.events, 'git.advertise');
    assert.deepEqual({ service: ad.service, repo: ad.repo, status: ad.status }, { service: 'git-upload-pack', repo: `/${repo.name}`, status: 200 });
    const fetches = eventsOf(c2.events, 'git.fetch').map((e) => e.data);
    const lsRefs = fetches.filter((f) => (f.commands as string[]).includes('ls-refs'));
    const fetch = fetches.filter((f) => (f.commands as string[]).includes('fetch'));
    assert.equal(lsRefs.length, 1, JSON.stringify(fetches));
    assert.equal(fetch.length, 1, JSON.stringify(fetches));
    assert.equal(lsRefs[0].protocol, 2);
    assert.ok((lsRefs[0].refPrefixes as string[]).includes('refs/heads/'));
    assert.deepEqual(fetch[0].wants, [repo.head, repo.head]);
    assert.equal(fetch[0].status, 200);
    assert.ok((fetch[0].bytesToClient as number) > 0);
    // Every request reached the target with the client's Git-Protocol header.
    assert.ok(http.requests.some((r) => r.path.startsWith(`/${repo.name}/git-upload-pack`) && r.gitProtocol === 'version=2'));

    const v0 = join(work, 'basic-v0');
    const c0 = await gitRecorded(work, ['-c', 'protocol.version=0', 'clone', url(repo), v0]);
    ok(c0.result, 'clone (v0)');
    assert.equal(await headOf(v0), repo.head);
    const f0 = oneEvent(c0.events, 'git.fetch');
    assert.equal(f0.protocol, 0);
    // Over HTTP, v0 git (fetch-pack under remote-curl) sends each wanted id once.
    assert.deepEqual(f0.wants, [repo.head]);

    // Fetch a commit that reached the target some other way.
    const direct = join(work, 'basic-direct');
    await gitIn(work, ['clone', '-q', repo.path, direct]);
    const upstreamCommit = await makeCommit(direct, 'upstream.txt', 'from elsewhere\n', 'upstream change');
    await gitIn(direct, ['push', '-q', 'origin', 'main']);
    const fe = await gitRecorded(v2, ['fetch', 'origin']);
    ok(fe.result, 'fetch');
    assert.equal(await headOf(v2, 'origin/main'), upstreamCommit);
    const ff = eventsOf(fe.events, 'git.fetch').map((e) => e.data).filter((f) => (f.wantCount as number) > 0);
    assert.equal(ff.length, 1, JSON.stringify(eventsOf(fe.events, 'git.fetch')));
    assert.deepEqual(ff[0].wants, [upstreamCommit]);
    assert.ok((ff[0].haves as number) >= 1);

    // Push to protected main: a fast-forward proven from the pack.
    await gitIn(v2, ['merge', '-q', '--ff-only', 'origin/main']);
    const mine = await makeCommit(v2, 'mine.txt', 'pushed over http\n', 'my change');
    const p = await gitRecorded(v2, ['push', 'origin', 'main']);
    ok(p.result, 'push');
    assert.equal(await refOf(repo.path, 'refs/heads/main'), mine);
    assert.equal(oneEvent(p.events, 'git.advertise').service, 'git-receive-pack');
    const { push, result } = pushEvents(p.events);
    assertAllowedPush(push);
    const u = updateFor(push, 'refs/heads/main');
    assert.deepEqual({ old: u.old, new: u.new, class: u.class, protectedBy: u.protectedBy }, { old: upstreamCommit, new: mine, class: 'fast-forward', protectedBy: 'refs/heads/main' });
    assert.match(u.evidence, /^pack: current tip [0-9a-f]{12} reached through 1 pushed commit\(s\)$/);
    assert.ok((push.packBytes as number) > 0);
    assertApplied(result, ['refs/heads/main']);
    assert.equal(result.packBytes, push.packBytes);
    assert.equal(updateFor(result, 'refs/heads/main').class, 'fast-forward');
    assert.equal(rpcSessions(p.recs, 'git-receive-pack').length, 1);
  });

  it('refuses a forced push to protected main with the same message; nothing reaches the target', async () => {
    const repo = await createBareRepo(srv, 'force', { initialCommits: 2 });
    const dir = await workClone(repo, 'force-work');
    await gitIn(dir, ['commit', '-q', '--amend', '-m', 'commit 2, amended']);
    const amended = await headOf(dir);
    const before = http.requests.length;

    const { events, result } = await gitRecorded(dir, ['push', '--force', 'origin', 'main']);
    failed(result, 'forced push');
    assert.ok(result.stderr.includes(` ! [remote rejected] main -> main (${REASON_NON_FF})`), result.stderr);
    assert.equal(await refOf(repo.path, 'refs/heads/main'), repo.head);
    assert.equal((await git(repo.path, ['cat-file', '-e', amended])).code, 1, 'the amended commit never reached the target');
    const toTarget = http.requests.slice(before).map((r) => `${r.method} ${r.path}`);
    assert.ok(!toTarget.some((r) => r.startsWith(`POST /${repo.name}/git-receive-pack`)), `no push reached the target: ${toTarget.join(', ')}`);
    assert.ok(toTarget.some((r) => r.startsWith(`POST /${repo.name}/git-upload-pack`)), `the target was probed: ${toTarget.join(', ')}`);

    const { push, result: res } = pushEvents(events);
    assert.equal(push.verdict, 'refused');
    const u = updateFor(push, 'refs/heads/main');
    assert.deepEqual({ old: u.old, new: u.new, class: u.class, allowed: u.allowed, reason: u.reason },
      { old: repo.head, new: amended, class: 'rewrite', allowed: false, reason: REASON_NON_FF });
    assert.match(u.evidence, /^target: new commit's history does not contain the current tip/);
    const probe = oneEvent(events, 'git.probe');
    assert.deepEqual({ tips: probe.tips, have: probe.have, answered: probe.answered }, { tips: [repo.commits[0]], have: repo.head, answered: true });
    assert.equal(res.refusedByGateway, true);
    assert.deepEqual(res.refs, [{ ref: 'refs/heads/main', ok: false, reason: REASON_NON_FF }]);
  });

  it('refuses deleting protected main (also alongside a branch with a pack); an unprotected branch can be deleted', async () => {
    const repo = await createBareRepo(srv, 'delete', { initialCommits: 1 });
    const dir = await workClone(repo, 'delete-work');

    const del = await gitRecorded(dir, ['push', 'origin', ':main']);
    failed(del.result, 'deleting main');
    assert.ok(del.result.stderr.includes(` ! [remote rejected] main (${REASON_DELETE})`), del.result.stderr);
    assert.equal(await refOf(repo.path, 'refs/heads/main'), repo.head);
    const d = pushEvents(del.events);
    assert.equal(d.push.verdict, 'refused');
    assert.deepEqual(updatesOf(d.push), [{ ref: 'refs/heads/main', old: repo.head, new: ZERO_ID, class: 'delete', evidence: 'delete',
      protectedBy: 'refs/heads/main', allowed: false, reason: REASON_DELETE,
      // --protect is a rule of the policy stage: the decision names it like any rule's.
      policy: { decision: 'deny', rule: '@protected-refs', version: 0, reason: REASON_DELETE } }]);
    assert.equal(d.result.refusedByGateway, true);

    await gitIn(dir, ['checkout', '-q', '-b', 'topic']);
    const t = await commitRandomFiles(dir, 'topic', 1, 2 * 1024 * 1024, 'topic');
    const mixed = await gitRecorded(dir, ['push', 'origin', 'topic', ':main']);
    failed(mixed.result, 'topic + deleting main');
    assert.ok(mixed.result.stderr.includes(` ! [remote rejected] main (${REASON_DELETE})`), mixed.result.stderr);
    assert.ok(mixed.result.stderr.includes(` ! [remote rejected] topic -> topic (${REASON_NOT_APPLIED})`), mixed.result.stderr);
    assert.equal(await refOf(repo.path, 'refs/heads/topic'), null);
    assert.ok((pushEvents(mixed.events).result.packBytes as number) > 2 * 1024 * 1024, 'the pack was drained and counted');

    ok(await git(dir, ['push', '-q', 'origin', 'topic']), 'push topic');
    assert.equal(await refOf(repo.path, 'refs/heads/topic'), t);
    const dt = await gitRecorded(dir, ['push', 'origin', ':topic']);
    ok(dt.result, 'delete topic');
    assert.equal(await refOf(repo.path, 'refs/heads/topic'), null);
    const p = pushEvents(dt.events);
    assertAllowedPush(p.push);
    assert.equal(updateFor(p.push, 'refs/heads/topic').class, 'delete');
    assertApplied(p.result, ['refs/heads/topic']);
  });

  it('probes the target over http to prove a fast-forward the pack leaves out; refuses moving main back', async () => {
    const repo = await createBareRepo(srv, 'probe', { initialCommits: 2 });
    const [c1, c2] = repo.commits;
    const dir = await workClone(repo, 'probe-work');
    await gitIn(dir, ['checkout', '-q', '-b', 'feature']);
    await makeCommit(dir, 'f1.txt', 'f1\n', 'feature 1');
    const f2 = await makeCommit(dir, 'f2.txt', 'f2\n', 'feature 2');
    ok(await git(dir, ['push', '-q', 'origin', 'feature']), 'push feature');

    const fw = await gitRecorded(dir, ['push', 'origin', 'origin/feature:main']);
    ok(fw.result, 'push origin/feature:main');
    assert.equal(await refOf(repo.path, 'refs/heads/main'), f2);
    const p = pushEvents(fw.events);
    assertAllowedPush(p.push);
    const u = updateFor(p.push, 'refs/heads/main');
    assert.equal(u.class, 'fast-forward');
    assert.equal(u.evidence, `target: current tip ${c2.slice(0, 12)} reached through 0 pushed and 2 target commit(s)`);
    const probe = oneEvent(fw.events, 'git.probe');
    assert.deepEqual({ tips: probe.tips, have: probe.have, answered: probe.answered, commits: probe.commits }, { tips: [f2], have: c2, answered: true, commits: 2 });
    assertApplied(p.result, ['refs/heads/main']);

    const back = await gitRecorded(dir, ['push', '--force', 'origin', `${c1}:refs/heads/main`]);
    failed(back.result, 'moving main back');
    assert.match(back.result.stderr, new RegExp(` ! \\[remote rejected\\] \\S+ -> main \\(${REASON_NON_FF.replace(/[()]/g, '\\$&')}\\)`));
    assert.equal(await refOf(repo.path, 'refs/heads/main'), f2);
    const b = pushEvents(back.events);
    assert.equal(updateFor(b.push, 'refs/heads/main').class, 'rewrite');
    assert.equal(b.result.refusedByGateway, true);
  });

  it('records push options, protects release/* (branch-name glob), and passes a 20 MB guarded push', async () => {
    const repo = await createBareRepo(srv, 'misc', { initialCommits: 1 });
    await gitIn(repo.path, ['config', 'receive.advertisePushOptions', 'true']);
    const log = join(work, 'misc-hook.log');
    installPreReceiveLog(repo.path, log);
    const dir = await workClone(repo, 'misc-work');

    const c = await makeCommit(dir, 'o.txt', 'o\n', 'with options');
    const o = await gitRecorded(dir, ['push', '-o', 'ci.skip', '-o', 'note=hello world', 'origin', 'main']);
    ok(o.result, 'push with options');
    const po = pushEvents(o.events);
    assert.deepEqual(po.push.pushOptions, ['ci.skip', 'note=hello world']);
    assertApplied(po.result, ['refs/heads/main']);
    assert.equal(readFileSync(log, 'utf8'), ['push options: 2', 'option: ci.skip', 'option: note=hello world', `update: refs/heads/main ${repo.head} ${c}`, ''].join('\n'));

    await gitIn(dir, ['checkout', '-q', '-b', 'release/1.0']);
    const r1 = await makeCommit(dir, 'r1.txt', 'r1\n', 'release 1.0');
    const cr = await gitRecorded(dir, ['push', 'origin', 'release/1.0']);
    ok(cr.result, 'create release/1.0');
    const ur = updateFor(pushEvents(cr.events).push, 'refs/heads/release/1.0');
    assert.deepEqual({ class: ur.class, protectedBy: ur.protectedBy, allowed: ur.allowed }, { class: 'create', protectedBy: 'release/*', allowed: true });
    await gitIn(dir, ['commit', '-q', '--amend', '-m', 'release 1.0, rewritten']);
    const fr = await gitRecorded(dir, ['push', '--force', 'origin', 'release/1.0']);
    failed(fr.result, 'forced push to release/1.0');
    assert.ok(fr.result.stderr.includes(` ! [remote rejected] release/1.0 -> release/1.0 (${REASON_NON_FF})`), fr.result.stderr);
    assert.equal(await refOf(repo.path, 'refs/heads/release/1.0'), r1);

    // 20 MB on main: git sends it chunked (larger than http.postBuffer), after a small probe request.
    await gitIn(dir, ['checkout', '-q', 'main']);
    const big = await commitRandomFiles(dir, 'data', 4, 5 * 1024 * 1024, '20 MB of random data');
    const expected = await packSizeFor(dir, [big, `^${c}`]);
    const lg = await gitRecorded(dir, ['push', 'origin', 'main']);
    ok(lg.result, 'large push');
    assert.equal(await refOf(repo.path, 'refs/heads/main'), big);
    const pl = pushEvents(lg.events);
    assertAllowedPush(pl.push);
    assert.equal(updateFor(pl.push, 'refs/heads/main').class, 'fast-forward');
    const held = pl.push.packBytes as number;
    assert.ok(Math.abs(held - expected) <= expected * 0.001 + 1024, `recorded ${held} bytes, a pack of the same objects is ${expected}`);
    assertApplied(pl.result, ['refs/heads/main']);
    assert.equal(pl.result.packBytes, held);
  });

  it('refuses a mixed push as a whole', async () => {
    const repo = await createBareRepo(srv, 'mixed', { initialCommits: 2 });
    const dir = await workClone(repo, 'mixed-work');
    await gitIn(dir, ['branch', 'newbranch']);
    await gitIn(dir, ['commit', '-q', '--amend', '-m', 'rewritten main']);
    const { events, result } = await gitRecorded(dir, ['push', '--force', 'origin', 'newbranch', 'main']);
    failed(result, 'mixed push');
    assert.ok(result.stderr.includes(` ! [remote rejected] main -> main (${REASON_NON_FF})`), result.stderr);
    assert.ok(result.stderr.includes(` ! [remote rejected] newbranch -> newbranch (${REASON_NOT_APPLIED})`), result.stderr);
    assert.equal(await refOf(repo.path, 'refs/heads/main'), repo.head);
    assert.equal(await refOf(repo.path, 'refs/heads/newbranch'), null);
    const p = pushEvents(events);
    assert.equal(p.push.verdict, 'refused');
    assert.equal(updateFor(p.push, 'refs/heads/newbranch').reason, REASON_NOT_APPLIED);
  });

  it('signs in only with a valid token: wrong, missing, expired and revoked tokens get 401, no grant 403', async () => {
    const repo = await createBareRepo(srv, 'auth', { initialCommits: 1 });
    const target = (): number => http.requests.filter((r) => r.path.startsWith(`/${repo.name}/`)).length;

    const check = async (tok: string | null, status: number, message: RegExp, denied: string | null, reason = denied) => {
      const beforeIds = await sessionIds(gw);
      const r = await git(work, ['ls-remote', url(repo, tok)]);
      failed(r, `ls-remote with token ${String(tok).slice(0, 8)}`);
      assert.match(r.stderr, message);
      const recs = await newRecordings(gw, beforeIds, denied === null ? 0 : 1, 5_000);
      if (denied === null) {
        assert.equal(recs.length, 0, 'a request without credentials is answered with a challenge and not recorded');
      } else {
        assert.equal(recs.length, 1, `one refused session: ${recs.map((x) => x.session.endReason).join('; ')}`);
        assert.equal(oneEvent(recs[0], 'access.denied').message, denied);
        assert.equal(recs[0].session.endReason, `refused: ${reason}`);
      }
      const res = await fetch(`${gw.url}/git/${CONN}/${repo.name}/info/refs?service=git-upload-pack`,
        { headers: tok === null ? {} : { authorization: 'Basic ' + Buffer.from(`x:${tok}`).toString('base64') } });
      assert.equal(res.status, status);
      if (status === 401) assert.match(res.headers.get('www-authenticate') ?? '', /^Basic realm=/);
      const body = await res.text();
      if (status === 401 && tok !== null) assert.equal(body, 'gatehouse: invalid token\n', 'the 401 body says nothing about why');
    };

    // Every token that does not sign in gets the same answer; the recording says why.
    await check('ght_not-a-real-token', 401, /fatal: Authentication failed for/, 'invalid token', 'token unknown');
    await check(null, 401, /could not read Username for '.*': terminal prompts disabled/, null);
    const short = await issueToken('alice', '1s');
    await sleep(2100);
    await check(short, 401, /fatal: Authentication failed for/, 'invalid token', 'token expired');
    const revoked = await issueToken('alice');
    await gw.cliOk(['token', 'revoke', revoked]);
    await check(revoked, 401, /fatal: Authentication failed for/, 'invalid token', 'token revoked');
    const bobs = await issueToken('bob');
    await check(bobs, 403, /The requested URL returned error: 403/, `identity "bob" has no grant on connection "${CONN}"`);
    assert.equal(target(), 0, 'no refused request reached the target');

    // Control: the same request with alice's token goes through.
    const good = await git(work, ['ls-remote', url(repo)]);
    ok(good, 'ls-remote with a valid token');
    assert.match(good.stdout, new RegExp(`^${repo.head}\\tHEAD$`, 'm'));
    assert.ok(target() > 0);
  });

  it('reads a gzip-compressed fetch request (a v0 clone of many branches) and records every want', async () => {
    const repo = await createBareRepo(srv, 'many', { initialCommits: 1 });
    // 40 branches, each on its own commit (git fast-import: one process for all of them).
    const stream = Array.from({ length: 40 }, (_, i) =>
      `commit refs/heads/b${i}\ncommitter T <t@example.invalid> ${1700000000 + i} +0000\ndata ${`branch ${i}`.length}\nbranch ${i}\nfrom ${repo.head}\n\n`).join('');
    const imp = await run('git', ['fast-import', '--quiet'], { cwd: repo.path, env: gitEnv(), input: stream, timeoutMs: 30_000 });
    assert.equal(imp.code, 0, imp.stderr);
    const tips = (await gitIn(repo.path, ['for-each-ref', '--format=%(objectname)', 'refs/heads/'])).split('\n');
    assert.equal(new Set(tips).size, 41);

    const dir = join(work, 'many-clone');
    const c = await gitRecorded(work, ['-c', 'protocol.version=0', 'clone', '--no-checkout', url(repo), dir], { GIT_TRACE_CURL: '1', GIT_TRACE_CURL_NO_DATA: '1' });
    ok(c.result, 'clone of 41 branches');
    assert.match(c.result.stderr, /=> Send header: Content-Encoding: gzip/, 'git compressed its request');
    assert.equal((await gitIn(dir, ['for-each-ref', '--format=%(refname)', 'refs/remotes/origin/'])).split('\n').filter((r) => !r.endsWith('/HEAD')).length, 41);
    const f = oneEvent(c.events, 'git.fetch');
    assert.equal(f.wantCount, 41);
    assert.deepEqual([...(f.wants as string[])].sort(), [...tips].sort());
    assert.equal(f.done, true);
    assert.equal(f.unparsed, undefined);
  });

  it('keeps a connection inside its --base-path: encoded dot segments and "?" in the repo path do not escape it', async () => {
    const app = await createBareRepo(join(srv, 'team'), 'app', { initialCommits: 1 });
    const secret = await createBareRepo(srv, 'secret', { initialCommits: 1 });
    const auth = { authorization: 'Basic ' + Buffer.from(`x:${token}`).toString('base64') };

    // Inside the base path: /git/team/app.git is the target's /team/app.git.
    const inside = await git(work, ['ls-remote', `http://x:${token}@${gwHostPort()}/git/${TEAM_CONN}/app.git`]);
    ok(inside, 'ls-remote inside the base path');
    assert.match(inside.stdout, new RegExp(`^${app.head}\trefs/heads/main$`, 'm'));

    // Outside it: every spelling must stay below /team on the target (or be refused by the gateway).
    const attempts = [
      '/..%2Fsecret.git', // %2F decoded by the router: caught by the ".." check
      '/%2e%2e/secret.git',
      '/%252e%252e/secret.git', // decoded once by the gateway, once more by the target
      '/%252E%252E/secret.git',
      '/app.git%3Fx=y', // a "?" that would start the target's query string
    ];
    for (const a of attempts) {
      const n = http.requests.length;
      const res = await fetch(`${gw.url}/git/${TEAM_CONN}${a}/info/refs?service=git-upload-pack`, { headers: auth });
      const body = Buffer.from(await res.arrayBuffer()).toString('latin1');
      assert.ok(!body.includes(secret.head!), `${a}: the target's /secret.git must not be served (status ${res.status})`);
      for (const r of http.requests.slice(n)) {
        const u = new URL(r.path, 'http://target');
        assert.ok(u.pathname.startsWith('/team/'), `${a}: reached the target as ${r.path} (${u.pathname}), outside /team`);
        assert.equal(u.search, '?service=git-upload-pack', `${a}: reached the target as ${r.path}: the client chose the target's query string`);
      }
    }
    const escaped = await git(work, ['clone', `http://x:${token}@${gwHostPort()}/git/${TEAM_CONN}/%252e%252e/secret.git`, join(work, 'escaped')]);
    assert.notEqual(escaped.code, 0, `git cloned ${secret.path} through connection "${TEAM_CONN}" (base path /team)`);
  });

  it('logs in to a target that requires basic auth with the connection\'s stored credential', async () => {
    const repo = await createBareRepo(authSrv, 'private', { initialCommits: 1 });
    // Control: the target refuses git without credentials.
    const direct = await git(work, ['ls-remote', `${authHttp.url}/${repo.name}`]);
    failed(direct, 'direct ls-remote without credentials');
    assert.equal(authHttp.requests.at(-1)?.status, 401);
    const first = authHttp.requests.length;

    const clone = join(work, 'private-clone');
    const c = await gitRecorded(work, ['clone', url(repo, token, AUTH_CONN), clone]);
    ok(c.result, 'clone through the gateway');
    assert.equal(await headOf(clone), repo.head);
    const mine = await makeCommit(clone, 'p.txt', 'p\n', 'private change');
    const p = await gitRecorded(clone, ['push', 'origin', 'main']);
    ok(p.result, 'push through the gateway');
    assert.equal(await refOf(repo.path, 'refs/heads/main'), mine);
    assertApplied(pushEvents(p.events).result, ['refs/heads/main']);
    const seen = authHttp.requests.slice(first);
    assert.ok(seen.length >= 4, `requests: ${seen.map((r) => r.path).join(', ')}`);
    for (const r of seen) {
      assert.equal(r.status, 200, `${r.method} ${r.path} → ${r.status}`);
      assert.equal(r.user, TARGET_USER, `${r.method} ${r.path} authenticated as the connection's user`);
    }
    // The gatehouse token never reaches the target, and the target password never reaches the recording.
    const all = JSON.stringify([...c.recs, ...p.recs]);
    assert.ok(!all.includes(TARGET_PASSWORD));
    assert.ok(!all.includes(token));
  });
});
