// `npm run bench:console`: how fast the web console shows the sessions list of a gateway that has
// recorded many sessions. A throwaway gateway gets BENCH_SESSIONS ended sessions (default 10,000;
// written straight into its SQLite store, a few events each, indexed for search by the gateway
// itself), then Chromium (Debian's, through playwright-core) signs in and opens the list, cold and
// warm, and runs a search. Reports milliseconds from navigation to the first row painted, and the
// API's own time for one page. Numbers, not a test: nothing here passes or fails.
import { randomBytes } from 'node:crypto';
import { DatabaseSync } from 'node:sqlite';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { startTestGateway } from '../test/support/gateway.ts';
import { cleanupAll, log, onCleanup } from './support.ts';

const SESSIONS = Number(process.env.BENCH_SESSIONS ?? 10_000);
const RUNS = 5;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

async function main(): Promise<void> {
  const gw = await startTestGateway();
  onCleanup('gateway', () => gw.stop());
  await gw.cliOk(['identity', 'add', 'bot', '--kind', 'agent']);

  // Sessions as the recorder writes them (ended, a statement and its result each), straight into the store.
  const db = new DatabaseSync(path.join(gw.dataDir, 'gatehouse.db'));
  db.exec('PRAGMA busy_timeout=10000');
  const started = Date.now();
  const addSession = db.prepare(`INSERT INTO sessions (id, protocol, identity_id, identity_name, identity_kind, client_addr, application_name,
    connection_id, connection_name, target_host, target_port, target_database, target_user, started_at, ended_at, end_reason, event_count, gateway_id)
    VALUES (?, 'postgres', 'id_bot', 'bot', 'agent', '127.0.0.1:5000', ?, 'conn_app', 'app', '10.0.0.5', 5432, 'app', 'app', ?, ?, 'client terminated', 2, '')`);
  const addEvent = db.prepare('INSERT INTO events (session_id, seq, ts, type, data, hash) VALUES (?, ?, ?, ?, ?, ?)');
  const t0 = (Date.now() - SESSIONS * 1000) * 1000;
  db.exec('BEGIN');
  for (let i = 0; i < SESSIONS; i++) {
    const id = `s_bench${i.toString().padStart(7, '0')}`;
    const at = t0 + i * 1_000_000;
    addSession.run(id, `job-${i}`, at, at + 500_000);
    addEvent.run(id, 0, at + 1000, 'query', JSON.stringify({ text: `SELECT * FROM orders WHERE id = ${i} AND note = 'w${randomBytes(3).toString('hex')}'` }), '0'.repeat(64));
    addEvent.run(id, 1, at + 2000, 'result', JSON.stringify({ ref: 0, tag: 'SELECT 1', rows: 1, sample: [[String(i)]] }), '0'.repeat(64));
  }
  db.exec('COMMIT');
  db.close();
  log(`${SESSIONS} sessions written in ${Date.now() - started} ms`);

  // The gateway indexes them for search behind the recording; wait until a late one is found.
  const indexStart = Date.now();
  for (;;) {
    const r = await fetch(`${gw.url}/api/v1/sessions?q=${encodeURIComponent(`id ${SESSIONS - 1}`)}&limit=1`, { headers: { authorization: `Bearer ${gw.adminToken}` } });
    if (((await r.json()) as unknown[]).length > 0) break;
    await new Promise((res) => setTimeout(res, 200));
  }
  log(`indexed for search in ${Date.now() - indexStart} ms`);

  const apiTimes: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const s = performance.now();
    await (await fetch(`${gw.url}/api/v1/sessions?limit=100`, { headers: { authorization: `Bearer ${gw.adminToken}` } })).json();
    apiTimes.push(performance.now() - s);
  }

  const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox', '--disable-gpu'] });
  onCleanup('browser', () => browser.close());
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(gw.url);
  await page.getByLabel('Token').fill(gw.adminToken);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.locator('table.list tbody tr').first().waitFor();
  const paint: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const s = performance.now();
    await page.goto(`${gw.url}/#/sessions?r=${i}`);
    await page.reload();
    await page.locator('table.list tbody tr').first().waitFor();
    paint.push(performance.now() - s);
  }
  const search: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const s = performance.now();
    await page.goto(`${gw.url}/#/sessions?q=orders+${SESSIONS - 1 - i}`);
    await page.locator('table.list tbody tr', { hasText: `job-${SESSIONS - 1 - i}` }).waitFor();
    search.push(performance.now() - s);
  }
  log(`sessions list, ${SESSIONS} sessions recorded: API page of 100 ${median(apiTimes).toFixed(1)} ms (median of ${RUNS}); console reload to first row ${median(paint).toFixed(0)} ms; search to its row ${median(search).toFixed(0)} ms`);
}

main().then(() => cleanupAll(), async (err: unknown) => {
  console.error(err);
  await cleanupAll();
  process.exitCode = 1;
});
