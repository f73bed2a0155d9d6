// Full-text search through the CLI and the API, with real psql sessions: `gatehouse sessions
// search` finds ended sessions by words of their statements and result samples (once indexed,
// behind the recording), every word must match, an identity sees only sessions it may audit, and
// the API pages by cursor.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { startPgCluster, type PgCluster } from '../support/pg-cluster.ts';
import { startTestGateway, type TestGateway } from '../support/gateway.ts';
import type { SessionView } from '../../src/cli/format.ts';

let cluster: PgCluster;
let gw: TestGateway;
let bot = '';

before(async () => {
  cluster = await startPgCluster();
  gw = await startTestGateway();
  bot = await gw.setupPostgres({ identity: 'bot', connection: 'app', cluster, kind: 'agent' });
  await gw.cliOk(['identity', 'add', 'eve', '--kind', 'human']);
});

after(async () => {
  await gw?.stop();
  await cluster?.stop();
});

function psql(sql: string, app: string): void {
  const r = spawnSync('psql', [gw.dsn('app', 'bot', `application_name=${app}`), '-X', '-v', 'ON_ERROR_STOP=1', '-c', sql], { env: { ...process.env, PGPASSWORD: bot }, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
}

async function search(words: string, token?: string): Promise<SessionView[]> {
  return JSON.parse(await gw.cliOk(['sessions', 'search', words, '--json'], token ? { token } : {})) as SessionView[];
}

async function eventually(words: string, n: number): Promise<SessionView[]> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    const found = await search(words);
    if (found.length >= n || Date.now() > deadline) return found;
    await new Promise((r) => setTimeout(r, 300));
  }
}

test('sessions search finds ended sessions by the words of their statements and result samples; every word must match', async () => {
  psql("SELECT 'persimmon' AS fruit", 'search-one');
  psql("SELECT 'durian' AS fruit, 'persimmon-free' AS note", 'search-two');
  const both = await eventually('persimmon', 2);
  assert.deepEqual(both.map((s) => s.applicationName).sort(), ['search-one', 'search-two']);
  assert.deepEqual((await search('durian persimmon')).map((s) => s.applicationName), ['search-two']);
  assert.deepEqual((await search('persimmon mango')), []);
  assert.match(await gw.cliOk(['sessions', 'search', 'no-such-word-anywhere']), /no ended session holds these words/);
  // Someone who may audit nothing is told so.
  const eve = (await gw.cliOk(['token', 'issue', 'eve', '--ttl', '1h'])).trim().split('\n').pop()!;
  const refused = await gw.cli(['sessions', 'search', 'persimmon'], { token: eve });
  assert.notEqual(refused.code, 0);
  assert.match(refused.stderr, /has no audit grant/);
});

test('the API pages sessions by cursor, newest first, without repeats', async () => {
  for (let i = 0; i < 5; i++) psql('SELECT 1', `page-${i}`);
  const get = async (q: string) => (await (await fetch(`${gw.url}/api/v1/sessions?${q}`, { headers: { authorization: `Bearer ${gw.adminToken}` } })).json()) as SessionView[];
  const all = await get('limit=1000');
  const seen: string[] = [];
  let before = '';
  for (;;) {
    const page = await get(`limit=2${before ? `&before=${before}` : ''}`);
    seen.push(...page.map((s) => s.id));
    if (page.length < 2) break;
    before = page.at(-1)!.id;
  }
  assert.deepEqual(seen, all.map((s) => s.id));
  const bad = await fetch(`${gw.url}/api/v1/sessions?before=s_nope`, { headers: { authorization: `Bearer ${gw.adminToken}` } });
  assert.equal(bad.status, 400);
});

test('the API filters sessions by protocol, outcome and when they started (server-side, so the page limit holds)', async () => {
  const fetchList = (q: string) => fetch(`${gw.url}/api/v1/sessions?${q}`, { headers: { authorization: `Bearer ${gw.adminToken}` } });
  const get = async (q: string) => {
    const r = await fetchList(q);
    assert.equal(r.status, 200, await r.clone().text());
    return (await r.json()) as SessionView[];
  };
  const t0 = new Date(Date.now() - 1000).toISOString();
  psql('SELECT 1', 'window-1');
  psql('SELECT 2', 'window-2');
  const t1 = new Date(Date.now() + 1000).toISOString();
  const inWindow = await get(`from=${t0}&to=${t1}&protocol=postgres&outcome=ended&limit=1000`);
  assert.deepEqual(inWindow.map((s) => s.applicationName).filter((a) => a.startsWith('window-')), ['window-2', 'window-1']);
  assert.ok(inWindow.every((s) => s.protocol === 'postgres' && s.endedAt !== null && Date.parse(s.startedAt) >= Date.parse(t0)));
  assert.deepEqual(await get(`to=${t0}&limit=1000`).then((l) => l.filter((s) => s.applicationName.startsWith('window-'))), [], 'before the window: none of them');
  assert.deepEqual(await get(`from=${t0}&protocol=ssh`), []);
  assert.deepEqual((await get(`from=${t0}&outcome=open`)).filter((s) => s.applicationName.startsWith('window-')), []);
  // Malformed filters are refused, not ignored.
  for (const q of ['from=yesterday', 'to=2026-13-45T00:00:00Z', 'protocol=ftp', 'outcome=maybe', 'open=true&protocol=ssh']) {
    assert.equal((await fetchList(q)).status, 400, q);
  }
});

test('GET /api/v1/sessions/:id/verify checks a session as verify --store does; an edited event is reported', async () => {
  psql("SELECT 'verify-me' AS x", 'verify-one');
  const s = (await eventually('verify', 1)).find((x) => x.applicationName === 'verify-one')!;
  const verify = async () => (await (await fetch(`${gw.url}/api/v1/sessions/${s.id}/verify`, { headers: { authorization: `Bearer ${gw.adminToken}` } })).json()) as { ok: boolean; sealed: boolean; problem?: string; events: number };
  const good = await verify();
  assert.equal(good.ok, true, good.problem ?? "");
  assert.equal(good.sealed, true);
  assert.ok(good.events >= 3);
  // Someone with write access to the store edits what the statement was.
  const { DatabaseSync } = await import('node:sqlite');
  const db = new DatabaseSync(`${gw.dataDir}/gatehouse.db`);
  db.exec('PRAGMA busy_timeout=5000');
  const changed = db.prepare("UPDATE events SET data = replace(data, 'verify-me', 'harmless') WHERE session_id = ? AND type = 'query'").run(s.id);
  db.close();
  assert.equal(changed.changes, 1);
  const bad = await verify();
  assert.equal(bad.ok, false);
  assert.match(bad.problem!, /hash|chain|altered/i);
});
