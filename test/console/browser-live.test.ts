// The web console in Chromium (playwright-core + Debian's chromium) against a real gateway,
// PostgreSQL, sshd, psql and ssh: the Integrity screen downloads a session's export bundle as a
// file, which the CLI's offline verify accepts (and refuses once edited), the export recorded in
// the admin audit log; the Live screen streams (SSE) an open ssh terminal session's output and
// an open psql session's statements as they happen, while the clients are still connected.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { startPgCluster, type PgCluster } from '../support/pg-cluster.ts';
import { run } from '../support/processes.ts';
import { startSsh, startSshWorld, sleep, type SshWorld } from '../ssh/helpers.ts';

const CHROMIUM = '/usr/bin/chromium';
const SHOTS = process.env.GATEHOUSE_SCREENSHOTS;
async function shot(page: Page, name: string): Promise<void> {
  if (SHOTS) await page.screenshot({ path: join(SHOTS, `${name}.png`) });
}

let w: SshWorld;
let cluster: PgCluster;
let browser: Browser;
let botToken = '';
let doraToken = '';

before(async () => {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} not found: install chromium (.ci/run does)`);
  [w, cluster] = await Promise.all([startSshWorld(), startPgCluster()]);
  botToken = await w.gw.setupPostgres({ identity: 'bot', connection: 'app', cluster, kind: 'agent' });
  await w.gw.cliOk(['identity', 'add', 'dora', '--kind', 'human']);
  await w.gw.cliOk(['grant', 'dora', 'app', '--action', 'audit']);
  await w.gw.cliOk(['grant', 'dora', 'box', '--action', 'audit']);
  doraToken = (await w.gw.cliOk(['token', 'issue', 'dora', '--ttl', '1h'])).trim().split('\n').pop()!;
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-gpu'] });
});

after(async () => {
  await browser?.close();
  await w?.stop();
  await cluster?.stop();
});

async function signedIn(token: string): Promise<Page> {
  const page = await browser.newPage({ acceptDownloads: true });
  page.setDefaultTimeout(15_000);
  await page.goto(w.gw.url);
  await page.getByLabel('Token').fill(token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { name: 'Sessions' }).waitFor();
  return page;
}

async function apiGet<T>(path: string, token = w.gw.adminToken): Promise<T> {
  const res = await fetch(`${w.gw.url}${path}`, { headers: { authorization: `Bearer ${token}` } });
  const text = await res.text();
  assert.equal(res.status, 200, `${path}: ${text}`);
  return JSON.parse(text) as T;
}

interface Listed { id: string; applicationName: string; endedAt: string | null; protocol: string }
async function sessionOf(app: string, open = false): Promise<Listed> {
  for (let i = 0; i < 100; i++) {
    const s = (await apiGet<Listed[]>('/api/v1/sessions?limit=50')).find((x) => x.applicationName === app && (open || x.endedAt !== null));
    if (s) return s;
    await sleep(100);
  }
  throw new Error(`no session of ${app}`);
}

function psqlInteractive(app: string): { child: ChildProcessWithoutNullStreams; out(): string; exited: Promise<number | null> } {
  const child = spawn('psql', [w.gw.dsn('app', 'bot', `application_name=${app}`), '-X', '-v', 'ON_ERROR_STOP=1'], { env: { ...process.env, PGPASSWORD: botToken } });
  let out = '';
  child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
  child.stderr.on('data', (d: Buffer) => { out += d.toString(); });
  const exited = new Promise<number | null>((r) => child.on('close', (code) => r(code)));
  return { child, out: () => out, exited };
}

test('the Integrity screen downloads the export bundle as a file; gatehouse verify checks it offline; the export is in the admin audit log', async () => {
  const p = psqlInteractive('console-bundle');
  p.child.stdin.end("SELECT 'quince' AS fruit;\n");
  assert.equal(await p.exited, 0, p.out());
  const s = await sessionOf('console-bundle');

  const page = await signedIn(doraToken);
  await page.goto(`${w.gw.url}/#/sessions/${s.id}`);
  await page.getByTestId('integrity').getByText('verified', { exact: true }).waitFor();
  await page.setViewportSize({ width: 1280, height: 700 });
  await shot(page, 'integrity');
  const [download] = await Promise.all([page.waitForEvent('download'), page.getByRole('link', { name: 'download the export bundle' }).click()]);
  assert.equal(download.suggestedFilename(), `${s.id}.bundle.tar.gz`);
  const dir = join(w.work, 'downloaded');
  mkdirSync(dir, { recursive: true });
  const file = join(dir, download.suggestedFilename());
  await download.saveAs(file);
  await page.close();

  // The downloaded file as it is, then unpacked by tar as a person would.
  const keyFiles = readdirSync(join(w.gw.dataDir, 'signing')).filter((f) => f.endsWith('.pem')).map((f) => join(w.gw.dataDir, 'signing', f));
  const direct = await w.gw.cli(['verify', file, '--trusted-key', ...keyFiles]);
  assert.equal(direct.code, 0, direct.stdout + direct.stderr);
  assert.match(direct.stdout, new RegExp(`^OK  session ${s.id}: `, 'm'));
  const untar = await run('tar', ['-xzf', file, '-C', dir], { timeoutMs: 10_000 });
  assert.equal(untar.code, 0, untar.stderr);
  const bundle = join(dir, s.id);
  assert.deepEqual(readdirSync(bundle).sort(), ['checkpoints.jsonl', 'events.jsonl', 'keys', 'manifest.json', 'seal.json']);
  // Pinned to the gateway's own signing key file: offline, trusting nothing in the bundle.
  const verified = await w.gw.cli(['verify', bundle, '--trusted-key', ...keyFiles]);
  assert.equal(verified.code, 0, verified.stdout + verified.stderr);
  assert.match(verified.stdout, new RegExp(`^OK  session ${s.id}: \\d+ events, \\d+ checkpoints, sealed`, 'm'));
  assert.match(verified.stdout, /\(trusted\)/);
  assert.ok(readFileSync(join(bundle, 'events.jsonl'), 'utf8').includes('quince'));

  // The same file edited is refused: the check can fail.
  const events = join(bundle, 'events.jsonl');
  writeFileSync(events, readFileSync(events, 'utf8').replace('quince', 'lemons'));
  const broken = await w.gw.cli(['verify', bundle, '--trusted-key', ...keyFiles]);
  assert.equal(broken.code, 1, broken.stdout);
  assert.match(broken.stdout, /^BROKEN /m);
  // And packed again as an archive, edited: refused too.
  const repacked = join(dir, 'edited.tar.gz');
  assert.equal((await run('tar', ['-czf', repacked, '-C', dir, s.id], { timeoutMs: 10_000 })).code, 0);
  const brokenArchive = await w.gw.cli(['verify', repacked, '--trusted-key', ...keyFiles]);
  assert.equal(brokenArchive.code, 1, brokenArchive.stdout);
  assert.match(brokenArchive.stdout, /^BROKEN .*events\.jsonl was modified/m);

  // The route names the file, and who took a copy of which session is in the admin audit log.
  const res = await fetch(`${w.gw.url}/api/v1/sessions/${s.id}/bundle`, { headers: { authorization: `Bearer ${doraToken}` } });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('content-type'), 'application/gzip');
  assert.equal(res.headers.get('content-disposition'), `attachment; filename="${s.id}.bundle.tar.gz"`);
  const audit = await apiGet<Array<{ action: string; data: { actor: { name: string }; session: string; format: string; sealed: boolean } }>>('/api/v1/audit');
  const exports = audit.filter((e) => e.action === 'session.export' && e.data.session === s.id);
  assert.equal(exports.length, 2, JSON.stringify(exports));
  for (const e of exports) {
    assert.equal(e.data.actor.name, 'dora');
    assert.equal(e.data.format, 'bundle.tar.gz');
    assert.equal(e.data.sealed, true);
  }
});

test('Live streams an open ssh terminal session: what is typed shows in the console while the client is still connected', async () => {
  const ssh = startSsh({ ...w.opts(), extra: ['-tt'] });
  try {
    const page = await signedIn(doraToken);
    await page.getByRole('link', { name: 'Live' }).click();
    const row = page.locator('tr', { hasText: 'box' }).filter({ has: page.getByRole('button', { name: 'Watch' }) }).first();
    await row.waitFor({ timeout: 20_000 });
    await row.getByRole('button', { name: 'Watch' }).click();
    await page.getByTestId('watch-state').getByText('live').waitFor();
    const term = page.locator('[data-testid^="live-terminal-"]').first();
    await term.waitFor();
    // Typed after the console started watching: only the stream can bring it.
    await sleep(500);
    ssh.child.stdin!.write('echo streamed-$((6*7))-now\n');
    const started = Date.now();
    await term.locator('.ap-term', { hasText: 'streamed-42-now' }).waitFor({ timeout: 10_000 });
    const shownMs = Date.now() - started;
    assert.equal(ssh.child.exitCode, null, 'the ssh session is still open');
    await page.setViewportSize({ width: 1280, height: 800 });
    await shot(page, 'live');
    console.log(`# typed line shown live in ${shownMs} ms`);
    // The open sessions, however many ended since (the Live list asks for exactly these).
    const open = await apiGet<Listed[]>('/api/v1/sessions?open=true', doraToken);
    assert.ok(open.length >= 1 && open.every((x) => x.endedAt === null), JSON.stringify(open));
    const watched = new URL(page.url()).searchParams.get('watch') ?? new URLSearchParams(new URL(page.url()).hash.split('?')[1]).get('watch');
    assert.ok(open.some((x) => x.id === watched), 'the watched session is listed as open');
    // Esc stops watching; Watch again to see the end.
    await page.keyboard.press('Escape');
    await page.getByTestId('watch').waitFor({ state: 'detached' });
    assert.equal(new URL(page.url()).hash, '#/live');
    await row.getByRole('button', { name: 'Watch' }).click();
    await page.getByTestId('watch-state').getByText('live').waitFor();
    ssh.child.stdin!.write('exit\n');
    await ssh.exited;
    await page.getByTestId('watch-state').getByText('ended').waitFor();
    await page.close();
  } finally {
    await ssh.stop();
  }
});

test('Live streams an open psql session: a statement appears with its outcome while psql is still connected', async () => {
  const p = psqlInteractive('console-live-psql');
  try {
    const page = await signedIn(doraToken);
    await page.getByRole('link', { name: 'Live' }).click();
    p.child.stdin.write('SELECT 1;\n');
    const row = page.locator('tr', { hasText: 'postgres' }).filter({ has: page.getByRole('button', { name: 'Watch' }) }).first();
    await row.waitFor({ timeout: 20_000 });
    await row.getByRole('button', { name: 'Watch' }).click();
    await page.getByTestId('watch-state').getByText('live').waitFor();
    await page.getByTestId('watch').locator('li', { hasText: 'SELECT 1' }).waitFor();
    await sleep(300);
    p.child.stdin.write("SELECT 'persimmon' AS live_fruit;\n");
    const started = Date.now();
    const li = page.getByTestId('watch').locator('li', { hasText: "SELECT 'persimmon' AS live_fruit" });
    await li.waitFor({ timeout: 10_000 });
    await li.getByText('SELECT 1', { exact: false }).waitFor();
    console.log(`# statement shown live in ${Date.now() - started} ms`);
    assert.equal(p.child.exitCode, null, 'psql is still connected');
    assert.match(p.out(), /persimmon/);
    // The watch is in the address: a reload watches the same session again, with what it ran so far.
    assert.match(new URL(page.url()).hash, /^#\/live\?watch=s_/);
    await page.reload();
    await page.getByTestId('watch-state').getByText('live').waitFor();
    await li.waitFor();
    p.child.stdin.write("SELECT 'after reload' AS again;\n");
    await page.getByTestId('watch').locator('li', { hasText: "SELECT 'after reload'" }).waitFor({ timeout: 10_000 });
    p.child.stdin.end();
    assert.equal(await p.exited, 0, p.out());
    await page.getByTestId('watch-state').getByText('ended').waitFor();
    await page.close();
  } finally {
    if (p.child.exitCode === null) p.child.kill();
  }
});

test('a live view ends when the viewer may no longer see the session: audit grant taken away (console), token revoked (API)', async () => {
  const ssh = startSsh({ ...w.opts(), extra: ['-tt'] });
  try {
    // In the console: dora watches, then loses her audit grant on box.
    await w.gw.cliOk(['identity', 'add', 'gus', '--kind', 'human']);
    await w.gw.cliOk(['grant', 'gus', 'box', '--action', 'audit']);
    const gusToken = (await w.gw.cliOk(['token', 'issue', 'gus', '--ttl', '1h'])).trim().split('\n').pop()!;
    const page = await signedIn(doraToken);
    await page.getByRole('link', { name: 'Live' }).click();
    const row = page.locator('tr', { hasText: 'box' }).filter({ has: page.getByRole('button', { name: 'Watch' }) }).first();
    await row.waitFor({ timeout: 20_000 });
    const id = (await row.getAttribute('data-session'))!;
    await row.getByRole('button', { name: 'Watch' }).click();
    await page.getByTestId('watch-state').getByText('live').waitFor();
    ssh.child.stdin!.write('echo before-$((2*3))-revoke\n');
    await page.locator('[data-testid^="live-terminal-"] .ap-term', { hasText: 'before-6-revoke' }).waitFor();

    // Over the API with a bearer token: the same stream, read by this test.
    const ac = new AbortController();
    const res = await fetch(`${w.gw.url}/api/v1/sessions/${id}/stream`, { headers: { authorization: `Bearer ${gusToken}` }, signal: ac.signal });
    assert.equal(res.status, 200);
    const reader = res.body!.getReader();
    let text = '';
    const readUntil = async (what: RegExp, ms: number) => {
      const deadline = Date.now() + ms;
      while (!what.test(text)) {
        if (Date.now() > deadline) throw new Error(`stream did not say ${what} in ${ms} ms:\n${text.slice(-500)}`);
        const { value, done } = await reader.read();
        if (done) break;
        text += Buffer.from(value).toString();
      }
    };
    await readUntil(/event: events/, 5000);

    await w.gw.cliOk(['revoke', 'dora', 'box', '--action', 'audit']);
    await w.gw.cliOk(['token', 'revoke', gusToken]);
    const t0 = Date.now();
    await page.getByRole('alert').filter({ hasText: `may no longer read session "${id}"` }).waitFor({ timeout: 12_000 });
    await page.getByTestId('watch-state').getByText('refused').waitFor();
    await readUntil(/event: revoked\ndata: \{"error":"the token this view was opened with is no longer valid/, 12_000);
    const { done } = await reader.read();
    assert.equal(done, true, 'the API stream ended');
    console.log(`# live views ended ${Date.now() - t0} ms after the grant and the token went`);
    // What was typed after is not shown.
    ssh.child.stdin!.write('echo after-$((2*3))-revoke\n');
    await ssh.waitForStdout('after-6-revoke');
    await sleep(1000);
    assert.equal(await page.locator('.ap-term', { hasText: 'after-6-revoke' }).count(), 0);
    ac.abort();
    await page.close();
    await w.gw.cliOk(['grant', 'dora', 'box', '--action', 'audit']);
  } finally {
    await ssh.stop();
  }
});

// Last: it stops the gateway.
test('open live streams (session and terminal) do not keep the gateway from stopping', { timeout: 60_000 }, async () => {
  const ssh = startSsh({ ...w.opts(), extra: ['-tt'] });
  try {
    let id = '';
    for (let i = 0; i < 100 && !id; i++) {
      id = (await apiGet<Array<Listed & { connection: string }>>('/api/v1/sessions?limit=20')).find((s) => s.connection === 'box' && s.endedAt === null)?.id ?? '';
      if (!id) await sleep(100);
    }
    ssh.child.stdin!.write('echo open-stream\n');
    await ssh.waitForStdout('open-stream');
    const [terminal] = await apiGet<Array<{ channel: number }>>(`/api/v1/sessions/${id}/terminals`);
    assert.ok(terminal, 'the shell is a terminal');
    const open = async (path: string) => {
      const res = await fetch(`${w.gw.url}${path}`, { headers: { authorization: `Bearer ${w.gw.adminToken}` } });
      assert.equal(res.status, 200, path);
      const reader = res.body!.getReader();
      const first = await Promise.race([reader.read(), sleep(10_000).then(() => null)]);
      assert.ok(first && !first.done, `${path} sent its first frame`);
      // Wrapped: an async function returning a promise would wait for it.
      return { ended: (async () => { for (;;) { try { if ((await reader.read()).done) return 'ended'; } catch { return 'ended'; } } })() };
    };
    const ends = [(await open(`/api/v1/sessions/${id}/stream`)).ended, (await open(`/api/v1/sessions/${id}/terminals/${terminal.channel}/stream`)).ended];
    const t0 = Date.now();
    await w.gw.stop();
    const ms = Date.now() - t0;
    assert.equal(w.gw.process.signalCode, null, `the gateway exited by itself, not killed (${ms} ms)`);
    assert.ok(ms < 5000, `stopped in ${ms} ms`);
    assert.deepEqual(await Promise.all(ends), ['ended', 'ended']);
    console.log(`# gateway with two open live streams stopped in ${ms} ms`);
  } finally {
    await ssh.stop();
  }
});
