// What a reviewer expects of the console, and what an attacker would try, in Chromium
// (playwright-core + Debian's chromium) against a real gateway, PostgreSQL, psql, sshd and ssh:
// the keyboard alone goes through the sessions list and back; times are in the viewer's zone with
// UTC on hover; deep links to a session and to one statement survive a reload; markup, ANSI
// escapes and bidi controls recorded from clients (statements, results, errors, application
// names, terminal output) are shown as text and nothing runs, even with the page's CSP taken
// away; an identity without the audit grant is refused every recordings route; no token or
// credential appears in any API response or admin screen.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { startPgCluster, type PgCluster } from '../support/pg-cluster.ts';
import { runSshRaw, startSshWorld, sleep, type SshWorld } from '../ssh/helpers.ts';

// Functions passed to page.evaluate run in the page (the test project has no DOM types).
interface PageElement { id: string; tagName: string; getAttribute(name: string): string | null; getBoundingClientRect(): { top: number; bottom: number } }
declare const document: { activeElement: PageElement | null; querySelector(s: string): { innerText: string } | null; addEventListener(type: string, fn: (e: { violatedDirective: string }) => void): void };
declare const window: { scrollY: number; innerHeight: number; __pwned?: number; __violations: string[] };

const CHROMIUM = '/usr/bin/chromium';
const SHOTS = process.env.GATEHOUSE_SCREENSHOTS;

let w: SshWorld;
let cluster: PgCluster;
let browser: Browser;
let botToken = '';
let doraToken = '';
let eveToken = '';

before(async () => {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} not found: install chromium (.ci/run does)`);
  [w, cluster] = await Promise.all([startSshWorld(), startPgCluster()]);
  botToken = await w.gw.setupPostgres({ identity: 'bot', connection: 'app', cluster, kind: 'agent' });
  await w.gw.cliOk(['identity', 'add', 'dora', '--kind', 'human']);
  await w.gw.cliOk(['grant', 'dora', 'app', '--action', 'audit']);
  await w.gw.cliOk(['grant', 'dora', 'box', '--action', 'audit']);
  doraToken = (await w.gw.cliOk(['token', 'issue', 'dora', '--ttl', '1h'])).trim().split('\n').pop()!;
  // eve may connect to app, but audit nothing.
  await w.gw.cliOk(['identity', 'add', 'eve', '--kind', 'human']);
  await w.gw.cliOk(['grant', 'eve', 'app']);
  eveToken = (await w.gw.cliOk(['token', 'issue', 'eve', '--ttl', '1h'])).trim().split('\n').pop()!;
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-gpu'] });
});

after(async () => {
  await browser?.close();
  await w?.stop();
  await cluster?.stop();
});

async function signIn(context: BrowserContext, token: string): Promise<Page> {
  const page = await context.newPage();
  page.setDefaultTimeout(15_000);
  await page.goto(w.gw.url);
  await page.getByLabel('Token').fill(token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { name: 'Sessions' }).waitFor();
  return page;
}

function psql(sql: string, app: string): Promise<{ code: number | null; out: string }> {
  const child = spawn('psql', [w.gw.dsn('app', 'bot', `application_name=${app}`), '-X', '-f', '-'], { env: { ...process.env, PGPASSWORD: botToken } });
  let out = '';
  child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
  child.stderr.on('data', (d: Buffer) => { out += d.toString(); });
  child.stdin.end(sql);
  return new Promise((r) => child.on('close', (code) => r({ code, out })));
}

async function api(path: string, token = w.gw.adminToken): Promise<{ status: number; text: string }> {
  const res = await fetch(`${w.gw.url}${path}`, { headers: { authorization: `Bearer ${token}` } });
  return { status: res.status, text: await res.text() };
}

interface Listed { id: string; applicationName: string; endedAt: string | null; startedAt: string; protocol: string; connection: string }
async function ended(app: string): Promise<Listed> {
  for (let i = 0; i < 100; i++) {
    const s = (JSON.parse((await api('/api/v1/sessions?limit=100')).text) as Listed[]).find((x) => x.applicationName === app && x.endedAt !== null);
    if (s) return s;
    await sleep(100);
  }
  throw new Error(`no ended session of ${app}`);
}

const active = (page: Page) => page.evaluate(() => document.activeElement?.getAttribute('data-session') ?? document.activeElement?.tagName ?? null);

test('keyboard: Tab reaches the rows, arrows move, Enter opens a session, Esc comes back to the row', async () => {
  for (const app of ['kbd-one', 'kbd-two', 'kbd-three']) assert.equal((await psql('SELECT 1;', app)).code, 0);
  const newest = await ended('kbd-three');
  const second = await ended('kbd-two');
  const context = await browser.newContext();
  const page = await signIn(context, doraToken);
  await page.locator('tr[data-session]').first().waitFor();
  await page.getByRole('button', { name: 'Filter' }).focus();
  await page.keyboard.press('Tab');
  assert.equal(await active(page), newest.id, 'the first row (newest session) takes the focus after the filters');
  await page.keyboard.press('ArrowDown');
  assert.equal(await active(page), second.id);
  await page.keyboard.press('Enter');
  await page.getByRole('heading', { name: `Session ${second.id}` }).waitFor();
  assert.equal(new URL(page.url()).hash, `#/sessions/${second.id}`);
  await page.keyboard.press('Escape');
  await page.getByRole('heading', { name: 'Sessions' }).waitFor();
  await page.locator(`tr[data-session="${second.id}"]`).waitFor();
  for (let i = 0; i < 20 && (await active(page)) !== second.id; i++) await sleep(50);
  assert.equal(await active(page), second.id, 'back on the row it opened');
  await context.close();
});

test("times are in the viewer's zone, with UTC on hover", async () => {
  assert.equal((await psql('SELECT 2;', 'tz-check')).code, 0);
  const s = await ended('tz-check');
  const context = await browser.newContext({ timezoneId: 'Asia/Kolkata', locale: 'en-US' });
  const page = await signIn(context, doraToken);
  await page.goto(`${w.gw.url}/#/sessions/${s.id}`);
  const started = page.locator('dl.facts time').first();
  await started.waitFor();
  const expected = new Date(s.startedAt).toLocaleString('en-US', { timeZone: 'Asia/Kolkata', year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit', timeZoneName: 'short' });
  const norm = (x: string) => x.replace(/\s+/g, ' ');
  assert.equal(norm(await started.innerText()), norm(expected));
  assert.match(await started.innerText(), /GMT\+5:30/);
  assert.equal(await started.getAttribute('title'), `${s.startedAt.replace('T', ' ').replace('Z', '')} UTC`);
  assert.equal(await started.getAttribute('datetime'), s.startedAt);
  await context.close();
});

test('deep links to a session and to one statement work on reload', async () => {
  const many = Array.from({ length: 80 }, (_, i) => (i === 60 ? "SELECT 'the-linked-one' AS target;" : `SELECT ${i} AS filler;`)).join('\n');
  assert.equal((await psql(many, 'deep-link')).code, 0);
  const s = await ended('deep-link');
  const context = await browser.newContext({ viewport: { width: 1200, height: 700 } });
  const page = await signIn(context, doraToken);
  await page.goto(`${w.gw.url}/#/sessions/${s.id}`);
  await page.reload();
  await page.getByRole('heading', { name: `Session ${s.id}` }).waitFor();
  const item = page.locator('li.ev', { has: page.locator('pre.sql', { hasText: "SELECT 'the-linked-one'" }) });
  await item.locator('a.seq').click();
  const seq = Number((await item.getAttribute('id'))!.slice(1));
  assert.equal(new URL(page.url()).hash, `#/sessions/${s.id}/e/${seq}`);
  // A fresh page at that address (as a link pasted into another tab), and a reload of it.
  const other = await context.newPage();
  for (const p of [other, page]) {
    if (p === other) await other.goto(`${w.gw.url}/#/sessions/${s.id}/e/${seq}`);
    else await p.reload();
    const target = p.locator(`li#e${seq}`);
    await target.waitFor();
    await p.waitForFunction((id) => document.activeElement?.id === id, `e${seq}`);
    assert.match((await target.getAttribute('class')) ?? '', /\bfocus\b/);
    assert.equal(await target.getAttribute('aria-current'), 'location');
    const inView = await target.evaluate((el: PageElement) => { const r = el.getBoundingClientRect(); return r.top >= 0 && r.bottom <= window.innerHeight; });
    assert.ok(inView, 'the linked statement is scrolled into view');
    assert.ok(await p.evaluate(() => window.scrollY > 0), 'it was further down the page');
  }
  await context.close();
});

// Recorded text an attacker chooses: markup that would run if interpreted, ANSI escapes, and
// bidi controls that would reorder what a reviewer reads.
const IMG = '<img src=x onerror=window.__pwned=1>';
const BIDI = '\u202Eevil\u202C';

test('markup, ANSI and bidi controls from clients render as visible text; nothing runs (CSP removed too)', async () => {
  const app = `xss-<b>bold</b>`;
  const statements = [
    `SELECT '${IMG}' AS "<script>window.__pwned=2</script>", E'\\x1b[31mred\\x1b[0m ${BIDI}' AS ansi;`,
    `SELECT '${IMG}'::int;`,
  ].join('\n');
  const ran = await psql(statements, app);
  assert.match(ran.out, /invalid input syntax/);
  const s = await ended(app);
  // Terminal output: a tag, an ANSI attribute, an OSC 8 hyperlink to javascript: and an OSC 0 window title.
  const term = await runSshRaw({ ...w.opts(), extra: ['-tt'] }, undefined,
    "printf '\\074img src=x onerror=window.__pwned=3\\076 \\033[1mbold\\033[0m \\033]8;;javascript:window.__pwned=5\\033\\\\click-me\\033]8;;\\033\\\\ \\033]0;pwned-title\\007\\n'\nexit\n");
  assert.equal(term.code, 0, term.stderr);

  const context = await browser.newContext();
  // Take the page's own defence away: only React's escaping stands between the text and the DOM.
  await context.route('**/*', async (route) => {
    const response = await route.fetch();
    const headers = { ...response.headers() };
    delete headers['content-security-policy'];
    await route.fulfill({ response, headers });
  });
  await context.addInitScript(() => {
    window.__violations = [];
    document.addEventListener('securitypolicyviolation', (e) => window.__violations.push(e.violatedDirective));
  });
  const page = await signIn(context, doraToken);
  const noScript = async () => {
    assert.equal(await page.evaluate(() => window.__pwned), undefined, 'no injected handler ran');
    assert.equal(await page.locator('#root img, #root script, #root [onerror]').count(), 0, 'no injected element');
  };
  // The list: the application name as text.
  const row = page.locator(`tr[data-session="${s.id}"]`);
  await row.waitFor();
  assert.match(await row.innerText(), /xss-<b>bold<\/b>/);
  assert.equal(await row.locator('b').count(), 0);
  // The session: statement, column name, values, error message, all as text; controls made visible.
  await row.getByRole('link').click();
  const first = page.locator('pre.sql').filter({ hasText: 'AS ansi' });
  await first.waitFor();
  const text = await first.innerText();
  assert.ok(text.includes(`SELECT '${IMG}' AS "<script>window.__pwned=2</script>"`), text);
  assert.ok(text.includes('\\u202eevil\\u202c'), `bidi controls shown as escapes: ${text}`);
  assert.ok(!text.includes('\u202E'), 'no raw bidi override on the page');
  // The escapes the console made are marked, so they differ from the same characters typed: the
  // statement's two bidi controls are, its typed \x1b (a backslash, x, 1, b) is not.
  assert.deepEqual(await first.locator('span.ctl').allInnerTexts(), ['\\u202e', '\\u202c']);
  await page.locator('table.sample th', { hasText: '<script>window.__pwned=2</script>' }).waitFor();
  const cell = await page.locator('table.sample td').filter({ hasText: 'red' }).innerText();
  assert.equal(cell, '\\x1b[31mred\\x1b[0m \\u202eevil\\u202c');
  assert.deepEqual(await page.locator('table.sample td').filter({ hasText: 'red' }).locator('span.ctl').allInnerTexts(), ['\\x1b', '\\x1b', '\\u202e', '\\u202c']);
  assert.equal(await page.locator('table.sample td').filter({ hasText: IMG }).count(), 1);
  await page.locator('.outcome .error', { hasText: `invalid input syntax for type integer: "${IMG}"` }).waitFor();
  await noScript();
  // A crafted link: the id comes back in the refusal, shown as text too.
  await page.goto(`${w.gw.url}/#/sessions/${encodeURIComponent('<img src=x onerror=window.__pwned=4>\u202e')}`);
  await page.getByRole('alert').filter({ hasText: 'session "<img src=x onerror=window.__pwned=4>\\u202e" does not exist' }).waitFor();
  await noScript();
  if (SHOTS) { await page.setViewportSize({ width: 1280, height: 700 }); await page.screenshot({ path: join(SHOTS, 'escaped.png') }); }

  // The terminal: the player shows the tag as characters, and bold text without the escape.
  const ssh = JSON.parse((await api('/api/v1/sessions?limit=20')).text) as Listed[];
  const box = ssh.find((x) => x.connection === 'box' && x.endedAt !== null)!;
  const titleBefore = await page.title();
  await page.goto(`${w.gw.url}/#/sessions/${box.id}`);
  const player = page.locator('[data-testid^="replay-"]').first();
  await player.waitFor();
  await player.click();
  await page.locator('.ap-term', { hasText: '<img src=x onerror=window.__pwned=3> bold' }).waitFor({ timeout: 20_000 });
  await page.locator('.ap-term', { hasText: 'click-me' }).waitFor();
  assert.equal(await page.locator('.ap-term a, figure.replay a').count(), 0, 'no link made from terminal output');
  assert.equal(await page.title(), titleBefore, 'terminal output does not set the page title');
  await noScript();
  assert.deepEqual(await page.evaluate(() => window.__violations), [], 'nothing even tried to run');
  await context.close();
});

test('names that could carry markup are refused where they are made: identities and connections', async () => {
  const identity = await w.gw.cli(['identity', 'add', '<img src=x>', '--kind', 'human']);
  assert.notEqual(identity.code, 0);
  assert.match(identity.stderr + identity.stdout, /invalid identity name/);
  const connection = await w.gw.cli(['connection', 'add', '<b>x</b>', '--type', 'postgres', '--host', '127.0.0.1', '--port', '5432', '--database', 'app', '--user', 'u']);
  assert.notEqual(connection.code, 0);
  assert.match(connection.stderr + connection.stdout, /name/);
});

test('an identity without the audit grant gets 403 from every recordings route, and the console says so', async () => {
  assert.equal((await psql('SELECT 3;', 'grant-check')).code, 0);
  const s = await ended('grant-check');
  assert.equal((await runSshRaw({ ...w.opts(), extra: ['-tt'] }, undefined, 'echo hi\nexit\n')).code, 0);
  const box = (JSON.parse((await api('/api/v1/sessions?limit=50')).text) as Listed[]).find((x) => x.connection === 'box')!;
  const routes = ['/api/v1/sessions', `/api/v1/sessions?q=SELECT`, '/api/v1/sessions?open=true', `/api/v1/sessions/${s.id}`, `/api/v1/sessions/${s.id}/evidence`, `/api/v1/sessions/${s.id}/bundle`,
    `/api/v1/sessions/${s.id}/verify`, `/api/v1/sessions/${s.id}/terminals`, `/api/v1/sessions/${s.id}/stream`, `/api/v1/sessions/${box.id}/terminals/0/stream`];
  for (const path of routes) {
    const r = await api(path, eveToken);
    assert.equal(r.status, 403, `${path}: ${r.status} ${r.text}`);
    assert.ok(!r.text.includes('SELECT 3'), path);
  }
  // An audit grant on one connection is not one on another (dora audits app and box; bot audits nothing).
  await w.gw.cliOk(['identity', 'add', 'finn', '--kind', 'human']);
  await w.gw.cliOk(['grant', 'finn', 'box', '--action', 'audit']);
  const finn = (await w.gw.cliOk(['token', 'issue', 'finn', '--ttl', '1h'])).trim().split('\n').pop()!;
  for (const path of [`/api/v1/sessions/${s.id}`, `/api/v1/sessions/${s.id}/bundle`, `/api/v1/sessions/${s.id}/stream`]) {
    assert.equal((await api(path, finn)).status, 403, path);
  }
  assert.ok(!(JSON.parse((await api('/api/v1/sessions?limit=100', finn)).text) as Listed[]).some((x) => x.connection === 'app'), 'finn lists only box sessions');

  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(w.gw.url);
  await page.getByLabel('Token').fill(eveToken);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('alert').filter({ hasText: 'has no audit grant: it may not read recordings' }).waitFor();
  await page.goto(`${w.gw.url}/#/sessions/${s.id}`);
  await page.getByRole('alert').filter({ hasText: 'no audit grant' }).waitFor();
  assert.equal(await page.locator('pre.sql').count(), 0);
  await context.close();
});

test('no token or credential appears in any API response or admin screen', async () => {
  // Sessions of both kinds, signed in with tokens (PostgreSQL) and keys (SSH).
  assert.equal((await psql('SELECT 4;', 'secrets-check')).code, 0);
  assert.equal((await runSshRaw({ ...w.opts(), extra: ['-tt'] }, undefined, 'echo hi\nexit\n')).code, 0);
  await ended('secrets-check');
  const context = await browser.newContext();
  const page = await signIn(context, w.gw.adminToken);
  const cookie = (await context.cookies()).find((c) => c.httpOnly)!;
  assert.ok(cookie && cookie.value.length > 20, 'the console session cookie');
  const keyBody = readFileSync(w.sshd.clientKeyFile, 'utf8').split('\n').filter((l) => l && !l.startsWith('-----')).join('');
  const secrets: Record<string, string> = {
    'admin token': w.gw.adminToken, 'bot token': botToken, 'dora token': doraToken, 'eve token': eveToken, 'console cookie': cookie.value,
    'PostgreSQL target password': 'scram-secret', 'SSH target private key': keyBody.slice(100, 160),
  };
  const check = (where: string, text: string) => {
    for (const [what, secret] of Object.entries(secrets)) assert.ok(!text.includes(secret), `${what} in ${where}`);
  };
  // Every GET route of the published API without parameters, then every session's routes.
  const spec = JSON.parse((await api('/api/openapi.json')).text) as { paths: Record<string, Record<string, unknown>> };
  const plain = Object.entries(spec.paths).filter(([p, ops]) => 'get' in ops && !p.includes('{') && !p.endsWith('/events')).map(([p]) => p);
  assert.ok(plain.includes('/api/v1/tokens') && plain.includes('/api/v1/connections') && plain.includes('/api/v1/audit'), plain.join(' '));
  let checked = 0;
  for (const path of plain) {
    const t0 = Date.now();
    const r = await api(path);
    if (Date.now() - t0 > 1000) console.log(`# slow: ${path} ${Date.now() - t0} ms`);
    check(path, r.text);
    checked++;
  }
  const sessions = JSON.parse((await api('/api/v1/sessions?limit=1000')).text) as Listed[];
  assert.ok(sessions.length >= 2);
  for (const s of sessions) {
    for (const sub of ['', '/evidence', '/verify', '/terminals']) {
      const r = await api(`/api/v1/sessions/${s.id}${sub}`);
      assert.equal(r.status, 200, `${sub} ${r.text}`);
      check(`/api/v1/sessions/${s.id}${sub}`, r.text);
      checked++;
    }
  }
  const session = JSON.parse((await api('/api/v1/console/session')).text) as Record<string, unknown>;
  check('/api/v1/console/session', JSON.stringify(session));
  // The admin screens as rendered.
  for (const tab of ['Identities', 'Tokens', 'Grants', 'Connections', 'Policy', 'Audit log']) {
    await page.goto(`${w.gw.url}/#/admin`);
    await page.getByRole('navigation', { name: 'Admin' }).getByRole('link', { name: tab }).click();
    await page.locator('section table.list, section p.muted').first().waitFor({ state: 'attached' });
    await page.waitForFunction(() => !document.querySelector('main')!.innerText.includes('Loading…'));
    check(`the ${tab} screen`, await page.content());
    if (SHOTS && tab === 'Connections') { await page.setViewportSize({ width: 1280, height: 600 }); await page.screenshot({ path: join(SHOTS, 'admin-connections.png') }); }
  }
  console.log(`# ${checked} API responses and 6 admin screens checked for ${Object.keys(secrets).length} secrets`);
  await context.close();
});

test('integrity on the sessions list: the page checked, an edited session is BROKEN and the filter finds it alone', async () => {
  for (const app of ['integrity-good', 'integrity-edited']) assert.equal((await psql(`SELECT '${app}-row' AS v;`, app)).code, 0);
  const good = await ended('integrity-good');
  const edited = await ended('integrity-edited');
  // Someone with write access to the store edits what the statement was.
  const { DatabaseSync } = await import('node:sqlite');
  const db = new DatabaseSync(join(w.gw.dataDir, 'gatehouse.db'));
  db.exec('PRAGMA busy_timeout=5000');
  const changed = db.prepare("UPDATE events SET data = replace(data, 'integrity-edited-row', 'harmless') WHERE session_id = ? AND type = 'query'").run(edited.id);
  db.close();
  assert.equal(changed.changes, 1);

  const context = await browser.newContext();
  const page = await signIn(context, doraToken);
  await page.getByRole('button', { name: 'Check integrity of these sessions' }).click();
  await page.locator(`tr[data-session="${edited.id}"] [data-testid="row-integrity"]`, { hasText: 'BROKEN' }).waitFor();
  await page.locator(`tr[data-session="${good.id}"] [data-testid="row-integrity"]`, { hasText: 'verified' }).waitFor();
  assert.match((await page.locator(`tr[data-session="${edited.id}"] [data-testid="row-integrity"] span`).getAttribute('title')) ?? '', /hash|chain|altered/i);
  // Filtered by it (a fresh page: the filter has the page checked by itself).
  await page.goto(`${w.gw.url}/#/sessions?integrity=broken`);
  await page.reload();
  await page.locator(`tr[data-session="${edited.id}"]`).waitFor();
  for (let i = 0; i < 50 && (await page.getByRole('button', { name: /Checking integrity/ }).count()) > 0; i++) await sleep(100);
  assert.deepEqual(await page.locator('tr[data-session]').evaluateAll((rows) => rows.map((r) => (r as unknown as PageElement).getAttribute('data-session'))), [edited.id]);
  if (SHOTS) { await page.setViewportSize({ width: 1280, height: 500 }); await page.screenshot({ path: join(SHOTS, 'integrity-filter.png') }); }
  await context.close();
});
