// Guarded pushes with bounded memory (issue 12 item 4): a 1 GiB push of incompressible blobs to a
// protected branch passes through the gateway over SSH and over smart HTTP while the gateway's
// RSS stays far below the push's size (the pack is spooled to disk and inspected as a stream); a
// forced push of the same branch is still refused; a push over the configured limit is refused
// with a message `git push` prints; a gzip bomb sent to Git HTTP is cut off at the same limit.
// GATEHOUSE_LARGE_PUSH_MB sets the big push's size (default 1024).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import zlib from 'node:zlib';
import { startTestGateway, type TestGateway } from '../support/gateway.ts';
import { generateClientKey, startSshd, type Sshd } from '../support/sshd.ts';
import { gitSshEnv } from '../support/ssh-client.ts';
import { createBareRepo, gitIn, startGitHttpServer, type GitHttpServer } from '../support/git-servers.ts';
import { run } from '../support/processes.ts';
import { failed, git, headOf, ok, oneEvent, recordAll, recordOne, refOf, updateFor } from './helpers.ts';

const MB = 1024 * 1024;
const BIG_MB = Number(process.env.GATEHOUSE_LARGE_PUSH_MB ?? 1024);
const BLOB_MB = 64;
const SMALL_LIMIT = 8 * MB; // below git http-backend's own 10 MB request buffer, so the gateway's cut is what is seen
const REASON_NON_FF = 'protected ref: non-fast-forward update refused by gatehouse';

let gw: TestGateway; // default limit (2 GiB)
let small: TestGateway; // GATEHOUSE_GIT_MAX_PUSH_BYTES=8MiB
let sshd: Sshd;
let httpd: GitHttpServer;
let work: string;
let srv: string;
const env: Record<string, NodeJS.ProcessEnv> = {};
const tokens: Record<string, string> = {};

async function setUp(g: TestGateway, name: string, keyFile: string): Promise<void> {
  await g.cliOk(['identity', 'add', 'alice', '--kind', 'human']);
  await g.cliOk(['key', 'add', 'alice', `${keyFile}.pub`]);
  await g.cliOk(['connection', 'add', 'repos', '--type', 'ssh', '--host', sshd.host, '--port', String(sshd.port), '--user', sshd.user,
    '--key-file', sshd.clientKeyFile, '--host-key-fingerprint', sshd.hostKeyFingerprint, '--protect', 'refs/heads/main']);
  await g.cliOk(['connection', 'add', 'forge', '--type', 'git-http', '--host', '127.0.0.1', '--port', String(httpd.port), '--protect', 'main']);
  await g.cliOk(['grant', 'alice', 'repos']);
  await g.cliOk(['grant', 'alice', 'forge']);
  tokens[name] = (await g.cliOk(['token', 'issue', 'alice', '--ttl', '1h'])).trim().split('\n').pop()!;
}

before(async () => {
  work = mkdtempSync(join(tmpdir(), 'gatehouse-large-push-'));
  srv = join(work, 'srv');
  [gw, small, sshd, httpd] = await Promise.all([
    startTestGateway(),
    startTestGateway({ env: { GATEHOUSE_GIT_MAX_PUSH_BYTES: '8MiB' } }),
    startSshd(),
    startGitHttpServer({ root: srv }),
  ]);
  const alice = await generateClientKey(work, 'ed25519', 'alice');
  env.ssh = gitSshEnv({ identityFile: alice.privateKeyFile });
  await setUp(gw, 'gw', alice.privateKeyFile);
  await setUp(small, 'small', alice.privateKeyFile);
});

after(async () => {
  await Promise.all([gw?.stop(), small?.stop(), sshd?.stop(), httpd?.stop()]);
  if (work) rmSync(work, { recursive: true, force: true });
});

const sshUrl = (g: TestGateway, repoPath: string) => `ssh://repos@127.0.0.1:${g.sshPort}${repoPath}`;
const httpUrl = (g: TestGateway, name: string, repo: string) => `http://x:${tokens[name]}@${g.url.replace(/^https?:\/\//, '')}/git/forge/${repo}`;

function rssOf(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m![1]) * 1024;
}

/** Runs fn while sampling the gateway's RSS every 50 ms; returns the result, the baseline and the peak. */
async function measured<T>(g: TestGateway, fn: () => Promise<T>): Promise<{ result: T; baseline: number; peak: number; ms: number }> {
  const pid = g.process.pid!;
  const baseline = rssOf(pid);
  let peak = baseline;
  const timer = setInterval(() => { peak = Math.max(peak, rssOf(pid)); }, 50);
  const t0 = Date.now();
  try {
    const result = await fn();
    peak = Math.max(peak, rssOf(pid));
    return { result, baseline, peak, ms: Date.now() - t0 };
  } finally {
    clearInterval(timer);
  }
}

/** A work clone of `bare` whose commits are stored uncompressed (random data does not compress). */
async function workClone(bare: string, name: string): Promise<string> {
  const dir = join(work, name);
  await gitIn(work, ['clone', '-q', bare, dir]);
  for (const [k, v] of [['core.compression', '0'], ['core.bigFileThreshold', '16m'], ['pack.window', '0']]) await gitIn(dir, ['config', k, v]);
  return dir;
}

/** Commits `mb` MiB of random data in files of BLOB_MB MiB (from /dev/urandom). */
async function commitRandom(dir: string, prefix: string, mb: number): Promise<string> {
  const files = Math.ceil(mb / BLOB_MB);
  const r = await run('sh', ['-c', `mkdir -p ${prefix} && for i in $(seq 1 ${files}); do head -c ${Math.min(mb, BLOB_MB) * MB} /dev/urandom > ${prefix}/blob-$i.bin; done`], { cwd: dir, timeoutMs: 120_000 });
  assert.equal(r.code, 0, r.stderr);
  await gitIn(dir, ['add', '--', prefix]);
  await gitIn(dir, ['commit', '-q', '-m', `${mb} MiB of random data`]);
  return gitIn(dir, ['rev-parse', 'HEAD']);
}

function spoolFiles(g: TestGateway): string[] {
  try { return readdirSync(join(g.dataDir, 'spool')); } catch { return []; }
}

describe('guarded pushes with bounded memory', () => {
  let dir: string;
  let big: string;
  let sshRepo: string;
  let httpRepo: string;

  before(async () => {
    const base = await createBareRepo(srv, 'big-ssh', { initialCommits: 1 });
    sshRepo = base.path;
    httpRepo = join(srv, 'big-http.git');
    await gitIn(srv, ['clone', '-q', '--bare', sshRepo, httpRepo]);
    await gitIn(httpRepo, ['config', 'http.receivepack', 'true']);
    // The targets keep the pushed pack as it is (a push of fewer than 100 objects would otherwise
    // be exploded into loose objects, each deflated again: git's time, not the gateway's).
    for (const r of [sshRepo, httpRepo]) await gitIn(r, ['config', 'receive.unpackLimit', '1']);
    dir = await workClone(sshRepo, 'big-work');
    const t0 = Date.now();
    big = await commitRandom(dir, 'data', BIG_MB);
    console.log(`# generated and committed ${BIG_MB} MiB in ${Date.now() - t0} ms`);
  });

  it(`passes a ${BIG_MB} MiB fast-forward to protected main over SSH with bounded gateway memory`, async () => {
    const { result: { rec, result }, baseline, peak, ms } = await measured(gw, () => recordOne(gw, () => git(dir, ['push', sshUrl(gw, sshRepo), 'main'], env.ssh, 300_000)));
    ok(result, 'big push over ssh');
    console.log(`# ssh: ${BIG_MB} MiB in ${ms} ms; gateway RSS ${(baseline / MB).toFixed(0)} → peak ${(peak / MB).toFixed(0)} MiB (+${((peak - baseline) / MB).toFixed(0)} MiB)`);
    assert.equal(await refOf(sshRepo, 'refs/heads/main'), big);
    const gp = oneEvent(rec, 'git.push');
    assert.equal(gp.verdict, 'allowed');
    assert.equal(updateFor(gp, 'refs/heads/main').class, 'fast-forward');
    assert.ok((gp.packBytes as number) > BIG_MB * MB, `held ${gp.packBytes} bytes`);
    const res = oneEvent(rec, 'git.push.result');
    assert.equal(res.unpack, 'ok');
    assert.equal(res.packBytes, gp.packBytes);
    assert.ok(peak - baseline < 300 * MB, `gateway RSS grew by ${((peak - baseline) / MB).toFixed(0)} MiB for a ${BIG_MB} MiB push`);
    assert.deepEqual(spoolFiles(gw), [], 'the spool file is removed after the push');
  });

  it(`passes the same ${BIG_MB} MiB push over smart HTTP with bounded gateway memory`, async () => {
    const { result: { events, result }, baseline, peak, ms } = await measured(gw, () => recordAll(gw, () => git(dir, ['push', httpUrl(gw, 'gw', 'big-http.git'), 'main'], {}, 300_000)));
    ok(result, 'big push over http');
    console.log(`# http: ${BIG_MB} MiB in ${ms} ms; gateway RSS ${(baseline / MB).toFixed(0)} → peak ${(peak / MB).toFixed(0)} MiB (+${((peak - baseline) / MB).toFixed(0)} MiB)`);
    assert.equal(await refOf(httpRepo, 'refs/heads/main'), big);
    const gp = oneEvent(events, 'git.push', (d) => (d.updates as unknown[]).length > 0);
    assert.equal(gp.verdict, 'allowed');
    assert.equal(updateFor(gp, 'refs/heads/main').class, 'fast-forward');
    assert.ok(peak - baseline < 300 * MB, `gateway RSS grew by ${((peak - baseline) / MB).toFixed(0)} MiB for a ${BIG_MB} MiB push`);
    assert.deepEqual(spoolFiles(gw), []);
  });

  it('still refuses a forced push of protected main, over both transports', async () => {
    // The big commit rewritten (same tree and parent, another message), without touching the work tree.
    const rewritten = await gitIn(dir, ['commit-tree', `${big}^{tree}`, '-p', `${big}^`, '-m', 'rewritten']);
    await gitIn(dir, ['update-ref', 'refs/heads/main', rewritten]);
    const ssh = await git(dir, ['push', '--force', sshUrl(gw, sshRepo), 'main'], env.ssh);
    failed(ssh, 'forced push over ssh');
    assert.ok(ssh.stderr.includes(` ! [remote rejected] main -> main (${REASON_NON_FF})`), ssh.stderr);
    const web = await git(dir, ['push', '--force', httpUrl(gw, 'gw', 'big-http.git'), 'main']);
    failed(web, 'forced push over http');
    assert.ok(web.stderr.includes(` ! [remote rejected] main -> main (${REASON_NON_FF})`), web.stderr);
    assert.equal(await refOf(sshRepo, 'refs/heads/main'), big);
    assert.equal(await refOf(httpRepo, 'refs/heads/main'), big);
  });
});

describe('the push limit (8 MiB on this gateway)', () => {
  let dir: string;
  let sshRepo: string;
  let before: string | undefined;

  it('refuses a 12 MiB push to protected main over SSH and HTTP with a message git prints; nothing reaches the target', async () => {
    const base = await createBareRepo(srv, 'limit', { initialCommits: 1 });
    sshRepo = base.path;
    before = base.head;
    dir = await workClone(sshRepo, 'limit-work');
    await commitRandom(dir, 'data', 12);
    const limitLine = `error: remote unpack failed: gatehouse refused a push of more than ${SMALL_LIMIT} bytes (the limit for pushes to protected refs, git.max_push_bytes)`;
    const refLine = ` ! [remote rejected] main -> main (protected ref: push too large for gatehouse to verify (over ${SMALL_LIMIT} bytes, git.max_push_bytes))`;

    const { rec, result } = await recordOne(small, () => git(dir, ['push', sshUrl(small, sshRepo), 'main'], env.ssh));
    failed(result, 'push over the limit (ssh)');
    assert.ok(result.stderr.includes(limitLine), result.stderr);
    assert.ok(result.stderr.includes(refLine), result.stderr);
    assert.equal(await refOf(sshRepo, 'refs/heads/main'), before);
    const gp = oneEvent(rec, 'git.push');
    assert.equal(gp.verdict, 'refused');
    assert.match(updateFor(gp, 'refs/heads/main').evidence, /larger than the 8388608-byte limit/);
    assert.equal(oneEvent(rec, 'git.push.result').refusedByGateway, true);

    const web = await recordAll(small, () => git(dir, ['push', httpUrl(small, 'small', 'limit.git'), 'main']));
    failed(web.result, 'push over the limit (http)');
    assert.ok(web.result.stderr.includes(limitLine), web.result.stderr);
    assert.ok(web.result.stderr.includes(refLine), web.result.stderr);
    assert.equal(await refOf(sshRepo, 'refs/heads/main'), before);
    assert.deepEqual(spoolFiles(small), []);
  });

  it('a push under the limit still passes on that gateway', async () => {
    const d = await workClone(sshRepo, 'limit-ok');
    const c = await commitRandom(d, 'ok', 4);
    ok(await git(d, ['push', sshUrl(small, sshRepo), 'main'], env.ssh), 'small push');
    assert.equal(await refOf(sshRepo, 'refs/heads/main'), c);
    assert.equal(await headOf(d), c);
  });

  it('cuts off a gzip bomb sent to Git HTTP at the limit (receive-pack and upload-pack)', async () => {
    // About 256 MiB inflated from a few hundred KB: a push command for protected main followed by
    // zeros, and an upload-pack request whose "have" lines never end (the target keeps reading).
    const zero = '0'.repeat(40);
    const pkt = (text: string) => `${(text.length + 4).toString(16).padStart(4, '0')}${text}`;
    const push = await gzipOf(Buffer.from(pkt(`${zero.replace(/0$/, '1')} ${zero.replace(/0$/, '2')} refs/heads/main\0report-status\n`) + '0000'), Buffer.alloc(MB), 256);
    const tip = await refOf(sshRepo, 'refs/heads/main');
    const haves = Buffer.from(pkt(`have ${'f'.repeat(40)}\n`).repeat(Math.floor(MB / 50))); // unknown: no ACK, the target reads on
    const fetch = await gzipOf(Buffer.from(pkt(`want ${tip} side-band-64k\n`) + '0000'), haves, 256);
    for (const [service, gz] of [['git-receive-pack', push], ['git-upload-pack', fetch]] as const) {
      assert.ok(gz.length < 2 * MB, `bomb of ${gz.length} bytes`);
      const { result: { rec, result }, baseline, peak, ms } = await measured(small, () => recordOne(small, () => post(small, `/git/forge/limit.git/${service}`, gz, service)));
      console.log(`# gzip bomb (${gz.length} bytes, 256 MiB inflated) to ${service}: HTTP ${result.status} in ${ms} ms; RSS +${((peak - baseline) / MB).toFixed(0)} MiB`);
      const limitText = `the request body inflates to more than ${SMALL_LIMIT} bytes (git.max_push_bytes)`;
      if (service === 'git-receive-pack') {
        // Held before anything reached the target: answered 413 with the reason.
        assert.equal(result.status, 413, JSON.stringify(result.body.slice(0, 300)));
        assert.equal(result.body, `gatehouse: ${limitText}\n`);
      } else {
        // Streamed: the target may already have sent its headers, so the answer is 413 or cut off.
        assert.ok(result.status === 413 || result.status === 200 || result.status === -1, `status ${result.status}`);
        assert.equal(oneEvent(rec, 'git.fetch').problem, limitText, JSON.stringify({ fetch: oneEvent(rec, 'git.fetch'), end: rec.session.endReason, body: result.body.slice(0, 200) }));
      }
      assert.ok(rec.session.endReason?.includes(limitText), `session ended: ${rec.session.endReason}`);
      assert.ok(peak - baseline < 100 * MB, `RSS grew by ${((peak - baseline) / MB).toFixed(0)} MiB`);
    }
    assert.equal(await refOf(sshRepo, 'refs/heads/main'), await headOf(join(work, 'limit-ok')));
  });
});

/** gzip of `prefix` followed by `block` repeated `times` times. */
async function gzipOf(prefix: Buffer, block: Buffer, times: number): Promise<Buffer> {
  const gz = zlib.createGzip({ level: 9 });
  const out: Buffer[] = [];
  gz.on('data', (c: Buffer) => out.push(c));
  const done = new Promise((resolve) => gz.on('end', resolve));
  gz.write(prefix);
  for (let i = 0; i < times; i++) if (!gz.write(block)) await new Promise((r) => gz.once('drain', r));
  gz.end();
  await done;
  return Buffer.concat(out);
}

function post(g: TestGateway, path: string, body: Buffer, service: string): Promise<{ status: number; body: string }> {
  const u = new URL(g.url);
  return new Promise((resolve) => {
    const req = http.request({
      host: u.hostname, port: u.port, method: 'POST', path,
      headers: {
        authorization: 'Basic ' + Buffer.from(`x:${tokens.small}`).toString('base64'), 'content-encoding': 'gzip',
        'content-type': `application/x-${service}-request`, 'content-length': body.length,
      },
    }, (res) => {
      let text = '';
      res.on('data', (c: Buffer) => { text += c.toString(); });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
      res.on('error', (err) => resolve({ status: -1, body: err.message }));
    });
    // A cut-off answer (the body was refused mid-stream) resolves too: the test reads the record.
    req.on('error', (err) => resolve({ status: -1, body: err.message }));
    req.end(body);
  });
}
