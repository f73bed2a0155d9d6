// Record before forward, under a crash: drive load through the gateway against a PostgreSQL
// that logs every statement it receives, SIGKILL the gateway mid-run, restart it, and check
// that every statement PostgreSQL logged is in the recording, in the same order.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { startPgCluster, type PgCluster } from '../support/pg-cluster.ts';
import { startTestGateway, type TestGateway } from '../support/gateway.ts';

const REPETITIONS = 3;
const APP = 'crashload';

let pg: PgCluster;
let dataDir: string;
let scriptFile: string;

before(async () => {
  pg = await startPgCluster({ settings: { log_statement: 'all', log_line_prefix: '%m [%p] %a: ' } });
  await pg.sql('CREATE TABLE crash_t (id bigserial PRIMARY KEY, v int NOT NULL); GRANT ALL ON crash_t, crash_t_id_seq TO scram_user;', 'app');
  dataDir = mkdtempSync(path.join(tmpdir(), 'gatehouse-crash-'));
  scriptFile = path.join(dataDir, 'load.sql');
  writeFileSync(scriptFile, '\\set v random(1, 1000000000)\nSELECT :v AS probe;\nINSERT INTO crash_t (v) VALUES (:v);\n');
});

after(async () => {
  await pg?.stop();
  rmSync(dataDir, { recursive: true, force: true });
});

/** Runs pgbench through the gateway until it is killed under it; resolves when pgbench exits. */
function load(gw: TestGateway, token: string): Promise<void> {
  return new Promise((resolve) => {
    const child = spawn('pgbench', ['-n', '-M', 'simple', '-c', '4', '-j', '2', '-T', '30', '-f', scriptFile, gw.dsn('crashdb', 'loader', `application_name=${APP}`)], {
      env: { ...process.env, PGPASSWORD: token }, stdio: 'ignore',
    });
    child.on('exit', () => resolve());
  });
}

interface Logged { pid: number; text: string }

function loggedStatements(): Logged[] {
  const out: Logged[] = [];
  for (const line of readFileSync(pg.logFile, 'utf8').split('\n')) {
    const m = /\[(\d+)\] ([^:]*): LOG:  statement: (.*)$/.exec(line);
    if (!m || m[2] !== APP) continue;
    // The pool's own reset statements are not client statements.
    if (m[3] === 'DISCARD ALL' || m[3] === 'ROLLBACK') continue;
    out.push({ pid: Number(m[1]), text: m[3] });
  }
  return out;
}

test(`SIGKILL mid-load, ${REPETITIONS} times: every statement PostgreSQL executed is in the recording, in order`, async () => {
  let gw = await startTestGateway({ dataDir });
  const token = await gw.setupPostgres({ identity: 'loader', connection: 'crashdb', cluster: pg });
  for (let i = 0; i < REPETITIONS; i++) {
    const running = load(gw, token);
    await new Promise((r) => setTimeout(r, 1200 + i * 300));
    await gw.kill();
    await running;
    gw = await startTestGateway({ dataDir });
  }

  // The restarted gateway has sealed the killed sessions as interrupted.
  const sessions = JSON.parse(await gw.cliOk(['sessions', 'list', '--identity', 'loader', '--limit', '1000', '--json'])) as Array<{ id: string; endReason: string | null; applicationName: string; startedAt: string }>;
  const loadSessions = sessions.filter((s) => s.applicationName === APP);
  assert.ok(loadSessions.length >= REPETITIONS * 4, `expected at least ${REPETITIONS * 4} load sessions, got ${loadSessions.length}`);
  const interrupted = loadSessions.filter((s) => s.endReason?.startsWith('interrupted'));
  assert.ok(interrupted.length >= REPETITIONS, `killed sessions are sealed as interrupted (${interrupted.length})`);

  // Recorded statements per upstream backend, sessions in start order.
  const recorded = new Map<number, string[]>();
  for (const s of [...loadSessions].sort((a, b) => a.startedAt.localeCompare(b.startedAt))) {
    const detail = JSON.parse(await gw.cliOk(['sessions', 'show', s.id, '--json'])) as { events: Array<{ type: string; data: Record<string, unknown> }> };
    const start = detail.events.find((e) => e.type === 'session.start');
    const pid = Number((start?.data.upstream as { pid?: number } | undefined)?.pid);
    const list = recorded.get(pid) ?? [];
    for (const e of detail.events) if (e.type === 'query') list.push(String(e.data.text).trim());
    recorded.set(pid, list);
  }

  const logged = loggedStatements();
  assert.ok(logged.length > 100, `the load reached PostgreSQL (${logged.length} statements logged)`);
  const byPid = new Map<number, string[]>();
  for (const l of logged) byPid.set(l.pid, [...(byPid.get(l.pid) ?? []), l.text.trim()]);

  let missing = 0;
  for (const [pid, executed] of byPid) {
    const rec = recorded.get(pid) ?? [];
    // `executed` must be an in-order subsequence of `rec` (rec may hold a few statements that
    // were recorded but never sent because the gateway died between the two).
    let j = 0;
    for (const text of executed) {
      while (j < rec.length && rec[j] !== text) j++;
      if (j === rec.length) { missing++; break; }
      j++;
    }
  }
  assert.equal(missing, 0, 'statements that reached PostgreSQL but are missing from the recording (or out of order)');

  const verify = await gw.cli(['verify', '--store', '--data-dir', dataDir]);
  assert.equal(verify.code, 0, verify.stdout + verify.stderr);
  await gw.stop();
});
