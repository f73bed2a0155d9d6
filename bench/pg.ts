// `npm run bench:pg`: pgbench select-only against direct PostgreSQL, HAProxy (TCP pass-through),
// PgBouncer (session pooling) and the gateway with recording on (without and with TLS), all in
// one run, on one throwaway PostgreSQL 15 cluster. Prints TPS, average latency and each path's
// ratio to direct and to HAProxy, each proxy's CPU time per transaction (utime + stime from
// /proc/PID/stat over the run, divided by transactions), a verdict on the targets of issue 14, how
// many statements the gateway recorded, and writes everything to bench/results/pg-latest.json.
//
// Environment:
//   BENCH_SECONDS   seconds per pgbench run (default 10)
//   BENCH_CPU_PROF  a directory: run the gateway under `node --cpu-prof` and write its
//                   .cpuprofile there when it stops (open in Chrome DevTools or speedscope)
//   BENCH_PATHS     comma-separated subset of the paths to run (default: all), e.g. direct,haproxy,gateway
//   BENCH_INTEGRITY 0: skip the integrity-cost pairs at the end
//   BENCH_WRITERS   e.g. inline,journal: at the end, one gateway per recording writer, run
//                   interleaved with HAProxy (simple and prepared, 8 clients, 5 rounds; medians)
//
// HAProxy and PgBouncer are installed from Debian when missing (apt-get; needs root). Their
// system services are never used: this script runs its own instances with its own config files
// in a temp dir, on free loopback ports, and stops everything it started, also on failure.
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import path from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { fileURLToPath } from 'node:url';
import { PG_BIN, PG_TEST_USERS, freePort, startPgCluster, type PgCluster } from '../test/support/pg-cluster.ts';
import { startTestGateway, GATEHOUSE_BIN, type TestGateway } from '../test/support/gateway.ts';
import { cleanupAll, errorMessage, firstLine, fmt, interrupted, lastLines, log, onCleanup } from './support.ts';
import { run, waitForPort, type RunResult } from '../test/support/processes.ts';

const BENCH_DIR: string = path.dirname(fileURLToPath(import.meta.url));
const REPO_ROOT: string = path.resolve(BENCH_DIR, '..');
const RESULTS_FILE: string = path.join(BENCH_DIR, 'results', 'pg-latest.json');

const SECONDS: number = parseSeconds(process.env.BENCH_SECONDS);
const CPU_PROF_DIR: string | undefined = process.env.BENCH_CPU_PROF ? path.resolve(process.env.BENCH_CPU_PROF) : undefined;
const CLIENTS: number = 8;
/** The second, higher client count (issue 14 asks for 8 and 32), run for the paths in WIDE_PATHS. */
const MANY_CLIENTS: number = 32;
const THREADS: number = 2;
const SCALE: number = 10;
const HOST: string = '127.0.0.1';
const DATABASE: string = 'app';
const UPSTREAM_USER: string = PG_TEST_USERS.scram.user;
const UPSTREAM_PASSWORD: string = PG_TEST_USERS.scram.password;
const GATEWAY_IDENTITY: string = 'bench';
const GATEWAY_CONNECTION: string = 'bench';

type PathName = 'direct' | 'haproxy' | 'pgbouncer' | 'gateway' | 'gateway+policy' | 'gateway+tls' | 'gateway+connector' | 'gateway+pgstore';
type Mode = 'simple' | 'extended' | 'prepared' | 'connect';

const ALL_PATHS: readonly PathName[] = ['direct', 'haproxy', 'pgbouncer', 'gateway', 'gateway+policy', 'gateway+tls', 'gateway+connector', 'gateway+pgstore'];
const PATHS: readonly PathName[] = parsePaths(process.env.BENCH_PATHS);
/** Paths also run in -M prepared and at 32 clients (the comparisons issue 14 asks for), to keep the run short. */
const WIDE_PATHS: readonly PathName[] = ['direct', 'haproxy', 'pgbouncer', 'gateway', 'gateway+tls', 'gateway+pgstore'];
const RUN_INTEGRITY: boolean = process.env.BENCH_INTEGRITY !== '0';
const WRITERS: readonly string[] = (process.env.BENCH_WRITERS ?? '').split(',').map((w) => w.trim()).filter((w) => w !== '');
/** pgbench logs this fraction of transactions (-l --sampling-rate) for the p99 latency. */
const LOG_SAMPLING_RATE: number = 0.2;

/** The same target as GATEWAY_CONNECTION, with a realistic policy in scope (BENCH_POLICY) that matches none of pgbench's statements. */
const POLICY_CONNECTION: string = 'bench-policy';
const BENCH_POLICY: string = `rules:
${[
  ['no-drops', '{ commands: ["DROP *"] }', 'deny'],
  ['no-truncates', '{ commands: ["TRUNCATE TABLE"] }', 'deny'],
  ['hold-unbounded-deletes', '{ commands: [DELETE], without_where: true }', 'hold'],
  ['hold-unbounded-updates', '{ commands: [UPDATE], without_where: true }', 'hold'],
  ['no-kill', '{ functions: [pg_terminate_backend, pg_cancel_backend] }', 'deny'],
  ['no-large-objects', '{ functions: ["lo_*"] }', 'deny'],
  ['no-copy-program', '{ commands: ["COPY * PROGRAM"] }', 'deny'],
  ['no-server-files', '{ commands: ["COPY * FILE"], functions: ["pg_read_*"] }', 'deny'],
  ['no-role-changes', '{ commands: [SET ROLE, SET SESSION AUTHORIZATION] }', 'deny'],
  ['no-alter-system', '{ commands: [ALTER SYSTEM] }', 'deny'],
  ['no-grants', '{ commands: [GRANT, REVOKE, GRANT ROLE] }', 'deny'],
  ['no-roles', '{ commands: [CREATE ROLE, ALTER ROLE, DROP ROLE] }', 'deny'],
  ['no-extensions', '{ commands: [CREATE EXTENSION] }', 'deny'],
  ['no-functions', '{ commands: [CREATE FUNCTION, CREATE PROCEDURE] }', 'deny'],
  ['flag-procedural', '{ procedural: true }', 'audit'],
  ['secrets', '{ tables: [secrets, "vault.*"] }', 'deny'],
  ['no-vacuum-full', '{ commands: [VACUUM] }', 'audit'],
  ['no-reindex', '{ commands: [REINDEX] }', 'audit'],
  ['no-cluster', '{ commands: [CLUSTER] }', 'audit'],
  ['no-databases', '{ commands: [CREATE DATABASE, DROP DATABASE] }', 'deny'],
].map(([name, sql, action]) => `  - name: ${name}\n    when: { connections: [${POLICY_CONNECTION}] }\n    sql: ${sql}\n    action: ${action}`).join('\n')}
`;
/** One group of pgbench runs: a mode at a client count, over some paths. Groups run in this order. */
interface RunGroup { mode: Mode; clients: number; paths: readonly PathName[] }
const GROUPS: readonly RunGroup[] = [
  { mode: 'simple', clients: CLIENTS, paths: ALL_PATHS },
  { mode: 'extended', clients: CLIENTS, paths: ALL_PATHS },
  { mode: 'prepared', clients: CLIENTS, paths: WIDE_PATHS },
  { mode: 'simple', clients: MANY_CLIENTS, paths: WIDE_PATHS },
  { mode: 'connect', clients: CLIENTS, paths: ALL_PATHS },
];

const MODE_ARGS: Record<Mode, string[]> = {
  simple: ['-M', 'simple'],
  extended: ['-M', 'extended'],
  prepared: ['-M', 'prepared'],
  connect: ['-M', 'simple', '-C'],
};

/** Where pgbench connects, and as whom. */
interface Endpoint {
  host: string;
  port: number;
  dbname: string;
  user: string;
  password: string;
  sslmode: 'disable' | 'require';
}

/** What the gateway recorded for one pgbench run (sessions that started during it). */
interface RecordingCount {
  sessions: number;
  /** Sessions still open when counting gave up waiting; their events are not counted yet. */
  openSessions: number;
  events: number;
  /** (events - session.start - session.end) / 2: each statement is one statement event and one result event. */
  statements: number;
  /**
   * 'sessions list': `gatehouse sessions list --json`. 'store': the list came back full of this
   * run's sessions (it has no paging), so they were counted read-only in the gateway's SQLite file.
   */
  source: 'sessions list' | 'store';
}

interface Row {
  path: PathName;
  mode: Mode;
  clients: number;
  tps: number | null;
  latencyMs: number | null;
  /** 99th percentile of the transactions pgbench logged (a LOG_SAMPLING_RATE sample). */
  p99Ms: number | null;
  /** The path's own processes' CPU time (user + system) over the run, per transaction; null for direct. */
  cpuUsPerTxn: number | null;
  /** Of which system time. */
  sysUsPerTxn: number | null;
  /** -C only: pgbench's "average connection time". */
  connectMs: number | null;
  transactions: number | null;
  failedTransactions: number | null;
  ratioToDirect: number | null;
  ratioToHaproxy: number | null;
  error: string | null;
  recording: RecordingCount | null;
}

interface Verdict {
  target: string;
  compared: string;
  gateway: number | null;
  reference: number | null;
  ratio: number | null;
  met: boolean | null;
}

interface Daemon {
  name: string;
  child: ChildProcess;
  output(): string;
  stop(): Promise<void>;
}

// ---- small helpers ------------------------------------------------------------------------------

function parsePaths(raw: string | undefined): readonly PathName[] {
  if (raw === undefined || raw.trim() === '') return ALL_PATHS;
  const names: string[] = raw.split(',').map((x) => x.trim()).filter((x) => x !== '');
  for (const n of names) if (!(ALL_PATHS as readonly string[]).includes(n)) throw new Error(`BENCH_PATHS: unknown path "${n}" (known: ${ALL_PATHS.join(', ')})`);
  return ALL_PATHS.filter((x) => names.includes(x));
}

function parseSeconds(raw: string | undefined): number {
  if (raw === undefined || raw === '') return 10;
  const n: number = Number(raw);
  if (!Number.isInteger(n) || n < 1) throw new Error(`BENCH_SECONDS must be a positive integer, got "${raw}"`);
  return n;
}

/** Environment for client tools: no PG* variables from the caller, plus `extra`. */
function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith('PG')) env[k] = v;
  }
  return { ...env, LC_ALL: 'C', ...extra };
}

function failure(what: string, r: RunResult): Error {
  return new Error(`${what} failed (code ${r.code}, signal ${r.signal}):\n${lastLines(r.stderr + r.stdout, 20)}`);
}

/** Locates an executable on PATH or in the sbin directories (Debian puts haproxy and pgbouncer in /usr/sbin). */
function findExecutable(name: string): string | undefined {
  const dirs: string[] = [...(process.env.PATH ?? '').split(':').filter((d) => d !== ''), '/usr/local/sbin', '/usr/sbin', '/sbin'];
  for (const dir of dirs) {
    const candidate: string = path.join(dir, name);
    if (existsSync(candidate)) return candidate;
  }
  return undefined;
}

function postgresIds(): { uid: number; gid: number } {
  return {
    uid: Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim()),
    gid: Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim()),
  };
}

// ---- setup ----------------------------------------------------------------------------------------

/** Installs haproxy and pgbouncer from Debian when either is missing; returns their paths. */
async function ensureTools(): Promise<{ haproxy: string; pgbouncer: string }> {
  const missing: string[] = ['haproxy', 'pgbouncer'].filter((name) => findExecutable(name) === undefined);
  if (missing.length > 0) {
    log(`${missing.join(' and ')} not installed; installing from Debian (apt-get update, apt-get install -y haproxy pgbouncer)`);
    const env: NodeJS.ProcessEnv = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
    const update: RunResult = await run('apt-get', ['update'], { env, timeoutMs: 600_000 });
    if (update.code !== 0) throw failure('apt-get update', update);
    const install: RunResult = await run('apt-get', ['install', '-y', 'haproxy', 'pgbouncer'], { env, timeoutMs: 900_000 });
    if (install.code !== 0) throw failure('apt-get install -y haproxy pgbouncer', install);
  }
  const haproxy: string | undefined = findExecutable('haproxy');
  const pgbouncer: string | undefined = findExecutable('pgbouncer');
  if (haproxy === undefined || pgbouncer === undefined) throw new Error('haproxy or pgbouncer still not found after apt-get install');
  return { haproxy, pgbouncer };
}

/**
 * Spawns a long-running server, waits until it accepts TCP connections on `port`, and returns a
 * handle whose stop() sends SIGTERM (SIGKILL after 5 s). Fails early if the process exits.
 */
async function startDaemon(name: string, cmd: string, args: string[], port: number, opts: { uid?: number; gid?: number; cwd?: string } = {}): Promise<Daemon> {
  const child: ChildProcess = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: cleanEnv(), ...opts });
  let output: string = '';
  child.stdout?.on('data', (d: Buffer) => { output += d.toString(); });
  child.stderr?.on('data', (d: Buffer) => { output += d.toString(); });
  const exited: Promise<void> = new Promise<void>((resolve) => {
    child.once('exit', () => resolve());
    child.once('error', (err: Error) => { output += `\nspawn error: ${err.message}`; resolve(); });
  });
  const alive = (): boolean => child.exitCode === null && child.signalCode === null && child.pid !== undefined;
  const daemon: Daemon = {
    name,
    child,
    output: () => output,
    async stop(): Promise<void> {
      if (!alive()) return;
      child.kill('SIGTERM');
      const timer: NodeJS.Timeout = setTimeout(() => child.kill('SIGKILL'), 5_000);
      await exited;
      clearTimeout(timer);
    },
  };
  onCleanup(name, () => daemon.stop());
  const failed: Promise<never> = exited.then(() => {
    throw new Error(`${name} exited during startup (code ${child.exitCode}, signal ${child.signalCode}):\n${lastLines(output, 20)}`);
  });
  await Promise.race([waitForPort(port, HOST, 15_000), failed]);
  failed.catch(() => {}); // exits after startup are noticed by the runs that use it
  return daemon;
}

async function startHaproxy(bin: string, dir: string, upstream: PgCluster): Promise<{ daemon: Daemon; port: number }> {
  const port: number = await freePort();
  const cfg: string = path.join(dir, 'haproxy.cfg');
  writeFileSync(cfg, [
    '# written by bench/pg.ts',
    'global',
    '  maxconn 1000',
    `  pidfile ${path.join(dir, 'haproxy.pid')}`,
    'defaults',
    '  mode tcp',
    '  timeout connect 5s',
    '  timeout client 1h',
    '  timeout server 1h',
    'frontend pg',
    `  bind ${HOST}:${port}`,
    '  default_backend pg',
    'backend pg',
    `  server pg1 ${upstream.host}:${upstream.port}`,
    '',
  ].join('\n'));
  // -db: stay in the foreground, so the child handle is haproxy itself.
  const daemon: Daemon = await startDaemon('haproxy', bin, ['-db', '-f', cfg], port);
  return { daemon, port };
}

/** PgBouncer refuses to run as root: it runs as the postgres OS user, with its files in `dir` (owned by postgres). */
async function startPgbouncer(bin: string, dir: string, upstream: PgCluster): Promise<{ daemon: Daemon; port: number }> {
  const { uid, gid } = postgresIds();
  const port: number = await freePort();
  const cfg: string = path.join(dir, 'pgbouncer.ini');
  const userlist: string = path.join(dir, 'userlist.txt');
  writeFileSync(userlist, `"${UPSTREAM_USER}" "${UPSTREAM_PASSWORD}"\n`, { mode: 0o600 });
  writeFileSync(cfg, [
    '; written by bench/pg.ts',
    '[databases]',
    `${DATABASE} = host=${upstream.host} port=${upstream.port} dbname=${DATABASE}`,
    '[pgbouncer]',
    `listen_addr = ${HOST}`,
    `listen_port = ${port}`,
    'unix_socket_dir =',
    // md5, not scram-sha-256: the client-side login must be cheap, as the gateway's token login
    // is, or -C measures SCRAM's key stretching instead of the pooler (issue #2's ~3,700/s figure
    // is with cheap client auth). Upstream, PgBouncer logs in with SCRAM from the plain password.
    'auth_type = md5',
    `auth_file = ${userlist}`,
    'pool_mode = session',
    'default_pool_size = 20',
    'max_client_conn = 200',
    `logfile = ${path.join(dir, 'pgbouncer.log')}`,
    `pidfile = ${path.join(dir, 'pgbouncer.pid')}`,
    '',
  ].join('\n'));
  for (const f of [cfg, userlist]) chownSync(f, uid, gid);
  // Equivalent to `runuser -u postgres -- pgbouncer <cfg>`, but the child handle is pgbouncer
  // itself (not runuser), so stopping it needs no signal forwarding. Foreground (no -d).
  const daemon: Daemon = await startDaemon('pgbouncer', bin, [cfg], port, { uid, gid, cwd: dir });
  return { daemon, port };
}

async function initPgbench(cluster: PgCluster): Promise<void> {
  // As scram_user itself, so every path (and the gateway's upstream login) uses the same role.
  const r: RunResult = await run(
    path.join(PG_BIN, 'pgbench'),
    ['-i', '-q', '-s', String(SCALE), '-h', cluster.host, '-p', String(cluster.port), '-U', UPSTREAM_USER, DATABASE],
    { env: cleanEnv({ PGPASSWORD: UPSTREAM_PASSWORD, PGSSLMODE: 'disable' }), timeoutMs: 600_000 },
  );
  if (r.code !== 0) throw failure('pgbench -i', r);
}

// ---- pgbench runs -----------------------------------------------------------------------------------

interface PgbenchResult {
  tps: number | null;
  latencyMs: number | null;
  p99Ms: number | null;
  connectMs: number | null;
  transactions: number | null;
  failedTransactions: number | null;
  error: string | null;
}

function matchNumber(text: string, re: RegExp): number | null {
  const m: RegExpExecArray | null = re.exec(text);
  return m === null ? null : Number(m[1]);
}

/** Parses pgbench 15's summary. `tps = N (without initial connection time)`, or with -C `(including reconnection times)`. */
function parsePgbench(out: string): Omit<PgbenchResult, 'error' | 'p99Ms'> {
  return {
    tps: matchNumber(out, /^tps = ([\d.]+) \(/m),
    latencyMs: matchNumber(out, /^latency average = ([\d.]+) ms/m),
    connectMs: matchNumber(out, /^average connection time = ([\d.]+) ms/m),
    transactions: matchNumber(out, /^number of transactions actually processed: (\d+)/m),
    failedTransactions: matchNumber(out, /^number of failed transactions: (\d+)/m),
  };
}

async function pgbench(endpoint: Endpoint, mode: Mode, clients: number = CLIENTS): Promise<PgbenchResult> {
  const logDir: string = mkdtempSync(path.join(tmpdir(), 'gatehouse-bench-log-'));
  const args: string[] = [
    '-S', '-n', '-c', String(clients), '-j', String(THREADS), '-T', String(SECONDS), ...MODE_ARGS[mode],
    '-l', '--sampling-rate', String(LOG_SAMPLING_RATE), '--log-prefix', path.join(logDir, 'tx'),
    '-h', endpoint.host, '-p', String(endpoint.port), '-U', endpoint.user, endpoint.dbname,
  ];
  const env: NodeJS.ProcessEnv = cleanEnv({ PGPASSWORD: endpoint.password, PGSSLMODE: endpoint.sslmode, PGCONNECT_TIMEOUT: '10' });
  let r: RunResult;
  let p99Ms: number | null = null;
  try {
    r = await run(path.join(PG_BIN, 'pgbench'), args, { env, timeoutMs: SECONDS * 1000 + 60_000, cwd: logDir });
    p99Ms = p99FromLogs(logDir);
  } catch (err) {
    return { tps: null, latencyMs: null, p99Ms: null, connectMs: null, transactions: null, failedTransactions: null, error: errorMessage(err) };
  } finally {
    rmSync(logDir, { recursive: true, force: true });
  }
  const parsed = { ...parsePgbench(r.stdout), p99Ms };
  let error: string | null = null;
  if (r.code !== 0 || parsed.tps === null) {
    error = `pgbench exited with code ${r.code}${r.signal ? ` (signal ${r.signal})` : ''}:\n${lastLines(r.stderr + '\n' + r.stdout, 12)}`;
  } else if (parsed.failedTransactions !== null && parsed.failedTransactions > 0) {
    error = `${parsed.failedTransactions} failed transactions`;
  }
  return { ...parsed, error };
}

/** p99 of the per-transaction latencies (third field, µs) in pgbench's -l logs, in ms. */
function p99FromLogs(dir: string): number | null {
  const lat: number[] = [];
  for (const f of readdirSync(dir)) {
    for (const line of readFileSync(path.join(dir, f), 'utf8').split('\n')) {
      const fields: string[] = line.split(' ');
      if (fields.length >= 3) lat.push(Number(fields[2]));
    }
  }
  if (lat.length === 0) return null;
  lat.sort((a, b) => a - b);
  return lat[Math.min(lat.length - 1, Math.floor(lat.length * 0.99))]! / 1000;
}

/** User and system CPU time of processes so far, in µs (Linux /proc; clock ticks of 10 ms). */
function cpuTimes(pids: readonly number[]): { user: number; sys: number } {
  let user: number = 0;
  let sys: number = 0;
  for (const pid of pids) {
    try {
      const fields: string[] = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
      user += Number(fields[11]) * 10_000;
      sys += Number(fields[12]) * 10_000;
    } catch {
      // exited: counts nothing more
    }
  }
  return { user, sys };
}

/** Peak resident set size of a process (VmHWM), in MiB. */
function peakRssMiB(pid: number): number | null {
  try {
    const m: RegExpExecArray | null = /^VmHWM:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : null;
  } catch {
    return null;
  }
}

// ---- recording check ----------------------------------------------------------------------------------

interface SessionListItem {
  id: string;
  endReason: string | null;
  eventCount: number;
}

const SESSION_LIST_LIMIT: number = 10_000; // the API's maximum

async function listGatewaySessions(gw: TestGateway): Promise<SessionListItem[]> {
  const out: string = await gw.cliOk(['sessions', 'list', '--identity', GATEWAY_IDENTITY, '--limit', String(SESSION_LIST_LIMIT), '--json']);
  return JSON.parse(out) as SessionListItem[];
}

/** A pgbench run's time span in the store's unit (microseconds since the epoch). */
interface Window {
  fromUs: number;
  toUs: number;
}

/**
 * Counts the sessions (and their events) that appeared since `seen`, then adds them to `seen`.
 * A session's eventCount is stored when it ends, so this waits (up to 20 s) for all to end.
 */
async function countNewRecordings(gw: TestGateway, seen: Set<string>, window: Window): Promise<RecordingCount> {
  const deadline: number = Date.now() + 20_000;
  let fresh: SessionListItem[] = [];
  let total: number = 0;
  for (;;) {
    const all: SessionListItem[] = await listGatewaySessions(gw);
    total = all.length;
    fresh = all.filter((s) => !seen.has(s.id));
    if (fresh.every((s) => s.endReason !== null) || Date.now() > deadline) break;
    await new Promise<void>((r) => setTimeout(r, 250));
  }
  for (const s of fresh) seen.add(s.id);
  // Newest first: only a full list made entirely of new sessions may have left some out.
  if (total >= SESSION_LIST_LIMIT && fresh.length === total) return countInStore(gw, window);
  const ended: SessionListItem[] = fresh.filter((s) => s.endReason !== null);
  const events: number = ended.reduce((sum, s) => sum + s.eventCount, 0);
  return {
    sessions: fresh.length,
    openSessions: fresh.length - ended.length,
    events,
    statements: Math.max(0, (events - 2 * ended.length) / 2),
    source: 'sessions list',
  };
}

/** Exact counts for the sessions that started in `window`, read from the gateway's SQLite file (read-only; WAL lets it read while the gateway writes). */
function countInStore(gw: TestGateway, window: Window): RecordingCount {
  const db: DatabaseSync = new DatabaseSync(path.join(gw.dataDir, 'gatehouse.db'), { readOnly: true });
  try {
    const inRun: string = 'identity_name = ? AND started_at BETWEEN ? AND ?';
    const args: [string, number, number] = [GATEWAY_IDENTITY, window.fromUs, window.toUs];
    const s = db.prepare(`SELECT count(*) AS n, count(end_reason) AS ended, coalesce(sum(event_count), 0) AS events FROM sessions WHERE ${inRun}`).get(...args) as
      { n: number; ended: number; events: number };
    const st = db.prepare(
      `SELECT count(*) AS n FROM events WHERE type IN ('query', 'execute', 'function_call') AND session_id IN (SELECT id FROM sessions WHERE ${inRun})`,
    ).get(...args) as { n: number };
    return { sessions: s.n, openSessions: s.n - s.ended, events: s.events, statements: st.n, source: 'store' };
  } finally {
    db.close();
  }
}

// ---- report -------------------------------------------------------------------------------------------

function find(rows: Row[], p: PathName, m: Mode, clients: number = CLIENTS): Row | undefined {
  return rows.find((r) => r.path === p && r.mode === m && r.clients === clients);
}

const MODE_LABEL: Record<Mode, string> = { simple: 'simple', extended: 'extended', prepared: 'prepared', connect: '-C simple' };

type RowKey = [PathName, Mode] | [PathName, Mode, number];

function label([p, m, c]: RowKey): string {
  return `${p} (${MODE_LABEL[m]}, ${c ?? CLIENTS} clients)`;
}

/** Verdict on the gateway's TPS being at least `atLeast` times the reference's. */
function compare(rows: Row[], target: string, gw: RowKey, ref: RowKey, atLeast: number): Verdict {
  const g: number | null = find(rows, gw[0], gw[1], gw[2])?.tps ?? null;
  const r: number | null = find(rows, ref[0], ref[1], ref[2])?.tps ?? null;
  const ratio: number | null = g !== null && r !== null && r > 0 ? g / r : null;
  return { target, compared: `${label(gw)} vs ${label(ref)}`, gateway: g, reference: r, ratio, met: ratio === null ? null : ratio >= atLeast };
}

/** Verdict on the gateway's CPU per transaction being at most `atMost` times the reference's. */
function compareCpu(rows: Row[], target: string, gw: RowKey, ref: RowKey, atMost: number): Verdict {
  const g: number | null = find(rows, gw[0], gw[1], gw[2])?.cpuUsPerTxn ?? null;
  const r: number | null = find(rows, ref[0], ref[1], ref[2])?.cpuUsPerTxn ?? null;
  const ratio: number | null = g !== null && r !== null && r > 0 ? g / r : null;
  return { target, compared: `CPU µs/transaction, ${label(gw)} vs ${label(ref)}`, gateway: g, reference: r, ratio, met: ratio === null ? null : ratio <= atMost };
}

function verdicts(rows: Row[]): { targets: Verdict[]; tls: Verdict[] } {
  return {
    targets: [
      compare(rows, 'gateway >= 0.75x HAProxy (simple, 8 clients)', ['gateway', 'simple'], ['haproxy', 'simple'], 0.75),
      compare(rows, 'gateway >= 0.9x HAProxy (simple, 32 clients)', ['gateway', 'simple', MANY_CLIENTS], ['haproxy', 'simple', MANY_CLIENTS], 0.9),
      compare(rows, 'gateway >= 0.75x HAProxy (extended, 8 clients)', ['gateway', 'extended'], ['haproxy', 'extended'], 0.75),
      compare(rows, 'gateway >= 0.75x HAProxy (prepared, 8 clients)', ['gateway', 'prepared'], ['haproxy', 'prepared'], 0.75),
      compareCpu(rows, 'gateway CPU per transaction <= 2x HAProxy\'s (simple, 8 clients)', ['gateway', 'simple'], ['haproxy', 'simple'], 2),
      compare(rows, 'gateway on the PostgreSQL store >= 0.8x the gateway on SQLite (simple, 8 clients)', ['gateway+pgstore', 'simple'], ['gateway', 'simple'], 0.8),
      compare(rows, 'gateway on the PostgreSQL store >= 0.8x the gateway on SQLite (simple, 32 clients)', ['gateway+pgstore', 'simple', MANY_CLIENTS], ['gateway', 'simple', MANY_CLIENTS], 0.8),
      compare(rows, 'gateway -C rate >= 4x direct -C rate (no TLS)', ['gateway', 'connect'], ['direct', 'connect'], 4),
      compare(rows, 'gateway + connector (separate process) >= 80% of the embedded gateway (simple, no TLS)', ['gateway+connector', 'simple'], ['gateway', 'simple'], 0.8),
      compare(rows, 'gateway with a 20-rule policy >= 95% of the gateway without (simple)', ['gateway+policy', 'simple'], ['gateway', 'simple'], 0.95),
      compare(rows, 'gateway with a 20-rule policy >= 95% of the gateway without (extended)', ['gateway+policy', 'extended'], ['gateway', 'extended'], 0.95),
    ],
    tls: [
      compare(rows, 'gateway over TLS vs HAProxy in plaintext (simple)', ['gateway+tls', 'simple'], ['haproxy', 'simple'], 1),
      compare(rows, 'gateway over TLS vs HAProxy in plaintext (extended)', ['gateway+tls', 'extended'], ['haproxy', 'extended'], 1),
      compare(rows, 'gateway over TLS vs plaintext gateway (simple)', ['gateway+tls', 'simple'], ['gateway', 'simple'], 1),
      compareCpu(rows, 'gateway over TLS vs plaintext gateway', ['gateway+tls', 'simple'], ['gateway', 'simple'], 1),
      compare(rows, 'gateway over TLS -C vs direct plaintext -C', ['gateway+tls', 'connect'], ['direct', 'connect'], 1),
    ],
  };
}

function printReport(rows: Row[], v: { targets: Verdict[]; tls: Verdict[] }): void {
  const header: string[] = ['path', 'TPS', 'avg ms', 'p99 ms', 'CPU µs/tx', 'sys µs/tx', 'vs direct', 'vs haproxy', 'conn ms'];
  const x = (n: number | null): string => (n === null ? '-' : `${n.toFixed(2)}x`);
  console.log(`\npgbench -S -n -j ${THREADS} -T ${SECONDS}, scale ${SCALE}; -C rows are connections (= transactions) per second`);
  console.log('direct, haproxy and pgbouncer are plaintext on loopback; "gateway" is plaintext (sslmode=disable), "gateway+tls" is TLS (sslmode=require)');
  console.log(`CPU: the path's own processes (haproxy, pgbouncer, the gateway; gateway+connector adds the connector), user + system from /proc, per transaction; p99 from a ${LOG_SAMPLING_RATE * 100}% sample of transactions (pgbench -l)`);
  for (const g of GROUPS) {
    const group: Row[] = rows.filter((r) => r.mode === g.mode && r.clients === g.clients);
    if (group.length === 0) continue;
    const body: string[][] = group.map((r) => [
      r.path,
      r.tps === null ? 'FAILED' : fmt(r.tps, 0),
      fmt(r.latencyMs, 3),
      fmt(r.p99Ms, 3),
      fmt(r.cpuUsPerTxn, 1),
      fmt(r.sysUsPerTxn, 1),
      x(r.ratioToDirect),
      x(r.ratioToHaproxy),
      fmt(r.connectMs, 3),
    ]);
    const widths: number[] = header.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
    const line = (cells: string[]): string => cells.map((c, i) => (i < 1 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
    console.log(`\n${MODE_LABEL[g.mode]}, ${g.clients} clients (${MODE_ARGS[g.mode].join(' ')} -c ${g.clients})`);
    console.log(line(header));
    console.log(widths.map((w) => '-'.repeat(w)).join('  '));
    for (const b of body) console.log(line(b));
  }

  const problems: Row[] = rows.filter((r) => r.error !== null);
  if (problems.length > 0) {
    console.log('\nProblems:');
    for (const r of problems) console.log(`  ${r.path} ${r.mode} ${r.clients} clients: ${r.error!.replace(/\n/g, '\n    ')}`);
  }

  console.log('\nVerdict (targets compare the plaintext gateway with the plaintext paths):');
  for (const t of v.targets) console.log(verdictLine(t));
  console.log('\nTLS figures (gateway over TLS; the reference paths are plaintext, so this is not like for like):');
  for (const t of v.tls) console.log(verdictLine(t));

  console.log('\nRecording, from `gatehouse sessions list --json` (identity "bench"; statements = (events - session start and end) / 2).');
  console.log('pgbench runs 2 statements of its own on its setup connection, so a complete recording holds transactions + 2:');
  for (const r of rows.filter((x) => x.recording !== null)) {
    const rec: RecordingCount = r.recording!;
    const notes: string[] = [];
    if (rec.openSessions > 0) notes.push(`${rec.openSessions} sessions still open, not counted`);
    if (rec.source === 'store') notes.push(`more than the session list's ${SESSION_LIST_LIMIT}: counted in the gateway's store`);
    console.log(
      `  ${`${r.path} ${MODE_LABEL[r.mode]} c${r.clients}`.padEnd(28)} ${fmt(rec.sessions, 0).padStart(7)} sessions  ${fmt(rec.events, 0).padStart(10)} events  ` +
        `${fmt(rec.statements, 0).padStart(9)} statements recorded  (pgbench: ${fmt(r.transactions, 0)} transactions)` +
        (notes.length > 0 ? `  [${notes.join('; ')}]` : ''),
    );
  }
  const recorded: Row[] = rows.filter((x) => x.recording !== null);
  const totalStatements: number = recorded.reduce((s, r) => s + r.recording!.statements, 0);
  const totalTransactions: number = recorded.reduce((s, r) => s + (r.transactions ?? 0), 0);
  console.log(`  total: ${fmt(totalStatements, 0)} statements recorded for ${fmt(totalTransactions, 0)} pgbench transactions through the gateway`);
}

function verdictLine(t: Verdict): string {
  const status: string = t.met === null ? 'NO DATA' : t.met ? 'MET' : 'NOT MET';
  const ratio: string = t.ratio === null ? '' : ` (${t.ratio.toFixed(2)}x)`;
  const digits: number = t.compared.startsWith('CPU') ? 1 : 0;
  return `  ${status.padEnd(7)}  ${t.target}: ${t.compared}: ${fmt(t.gateway, digits)} vs ${fmt(t.reference, digits)}${ratio}`;
}

// ---- main -----------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const startedAt: string = new Date().toISOString();
  const loadBefore: number[] = loadavg();
  const tools = await ensureTools();

  log('starting PostgreSQL 15');
  const cluster: PgCluster = await startPgCluster({ settings: { max_connections: '200', shared_buffers: '128MB' } });
  onCleanup('postgres', () => cluster.stop());
  log(`PostgreSQL on ${cluster.host}:${cluster.port}; pgbench -i -s ${SCALE}`);
  await initPgbench(cluster);

  const dir: string = mkdtempSync(path.join(tmpdir(), 'gatehouse-bench-'));
  onCleanup('temp dir', async () => rmSync(dir, { recursive: true, force: true }));
  const { uid, gid } = postgresIds();
  chownSync(dir, uid, gid);

  const haproxy = await startHaproxy(tools.haproxy, dir, cluster);
  log(`HAProxy on ${HOST}:${haproxy.port}`);
  const pgbouncer = await startPgbouncer(tools.pgbouncer, dir, cluster);
  log(`PgBouncer on ${HOST}:${pgbouncer.port}`);

  // The test harness logs at debug level; the benchmark runs the gateway at its production default.
  const gatewayEnv: NodeJS.ProcessEnv = { GATEHOUSE_LOG_LEVEL: 'info' };
  if (CPU_PROF_DIR !== undefined) {
    mkdirSync(CPU_PROF_DIR, { recursive: true });
    gatewayEnv.NODE_OPTIONS = [process.env.NODE_OPTIONS, '--cpu-prof', `--cpu-prof-dir=${CPU_PROF_DIR}`].filter((o) => o).join(' ');
  }
  const gw: TestGateway = await startTestGateway({ env: gatewayEnv });
  onCleanup('gateway', () => gw.stop());
  const token: string = await gw.setupPostgres({ identity: GATEWAY_IDENTITY, connection: GATEWAY_CONNECTION, cluster, user: UPSTREAM_USER, sslmode: 'disable' });
  log(`gateway on ${gw.pgHost}:${gw.pgPort} (api ${gw.url})`);
  if (CPU_PROF_DIR !== undefined) log(`gateway CPU profile goes to ${CPU_PROF_DIR} when the gateway stops (at the end)`);
  const connectorPid: number = await startBenchConnector(gw, cluster, dir);
  const pgStore = PATHS.includes('gateway+pgstore') ? await startPgStoreGateway(cluster, gatewayEnv) : null;
  await applyBenchPolicy(gw, cluster, dir);

  const upstreamEndpoint = (port: number): Endpoint => ({ host: HOST, port, dbname: DATABASE, user: UPSTREAM_USER, password: UPSTREAM_PASSWORD, sslmode: 'disable' });
  const gatewayEndpoint = (sslmode: 'disable' | 'require'): Endpoint => ({ host: gw.pgHost, port: gw.pgPort, dbname: GATEWAY_CONNECTION, user: GATEWAY_IDENTITY, password: token, sslmode });
  const endpoints: Record<PathName, Endpoint> = {
    direct: upstreamEndpoint(cluster.port),
    haproxy: upstreamEndpoint(haproxy.port),
    pgbouncer: upstreamEndpoint(pgbouncer.port),
    gateway: gatewayEndpoint('disable'),
    'gateway+policy': { ...gatewayEndpoint('disable'), dbname: POLICY_CONNECTION },
    'gateway+tls': gatewayEndpoint('require'),
    'gateway+connector': { ...gatewayEndpoint('disable'), dbname: VIA_CONNECTION },
    'gateway+pgstore': pgStore ? { ...gatewayEndpoint('disable'), host: pgStore.gw.pgHost, port: pgStore.gw.pgPort, password: pgStore.token } : gatewayEndpoint('disable'),
  };
  const gatewayOf = (p: PathName): TestGateway => (p === 'gateway+pgstore' && pgStore ? pgStore.gw : gw);

  const pidsOf: Record<PathName, number[]> = {
    direct: [],
    haproxy: [haproxy.daemon.child.pid!],
    pgbouncer: [pgbouncer.daemon.child.pid!],
    gateway: [gw.process.pid!],
    'gateway+policy': [gw.process.pid!],
    'gateway+tls': [gw.process.pid!],
    'gateway+connector': [gw.process.pid!, connectorPid],
    'gateway+pgstore': pgStore ? [pgStore.gw.process.pid!] : [],
  };

  const seenSessions: Set<string> = new Set((await listGatewaySessions(gw)).map((s) => s.id));
  if (pgStore) for (const s of await listGatewaySessions(pgStore.gw)) seenSessions.add(s.id);
  const rows: Row[] = [];
  const total: number = GROUPS.reduce((n, g) => n + g.paths.filter((p) => PATHS.includes(p)).length, 0);
  // Groups outermost: the paths compared with each other run close together in time.
  for (const { mode, clients, paths } of GROUPS) {
    for (const p of paths.filter((x) => PATHS.includes(x))) {
      if (interrupted) return;
      log(`[${rows.length + 1}/${total}] ${p} ${mode} ${clients} clients (${SECONDS} s)`);
      const window: Window = { fromUs: Date.now() * 1000, toUs: 0 };
      const cpuBefore = cpuTimes(pidsOf[p]);
      const res: PgbenchResult = await pgbench(endpoints[p], mode, clients);
      const cpuAfter = cpuTimes(pidsOf[p]);
      window.toUs = Date.now() * 1000;
      const measured: boolean = pidsOf[p].length > 0 && res.transactions !== null && res.transactions > 0;
      const cpuUsPerTxn: number | null = measured ? (cpuAfter.user + cpuAfter.sys - cpuBefore.user - cpuBefore.sys) / res.transactions! : null;
      const sysUsPerTxn: number | null = measured ? (cpuAfter.sys - cpuBefore.sys) / res.transactions! : null;
      const isGateway: boolean = p.startsWith('gateway');
      let recording: RecordingCount | null = null;
      if (isGateway) {
        try {
          recording = await countNewRecordings(gatewayOf(p), seenSessions, window);
        } catch (err) {
          res.error = [res.error, `counting recorded sessions failed: ${errorMessage(err)}`].filter((e) => e !== null).join('\n');
        }
      }
      const direct: Row | undefined = find(rows, 'direct', mode, clients);
      const viaHaproxy: Row | undefined = find(rows, 'haproxy', mode, clients);
      const ratioToDirect: number | null = res.tps !== null && direct?.tps ? res.tps / direct.tps : null;
      const ratioToHaproxy: number | null = res.tps !== null && viaHaproxy?.tps ? res.tps / viaHaproxy.tps : null;
      rows.push({ path: p, mode, clients, ...res, cpuUsPerTxn, sysUsPerTxn, ratioToDirect, ratioToHaproxy, recording });
      log(`    ${res.tps === null ? 'FAILED' : `${fmt(res.tps, 0)} tps, ${fmt(res.latencyMs, 3)} ms, p99 ${fmt(res.p99Ms, 3)} ms`}` +
        `${cpuUsPerTxn === null ? '' : `, ${cpuUsPerTxn.toFixed(1)} µs CPU/tx`}${res.error ? `: ${res.error.split('\n')[0]}` : ''}`);
      if (isGateway && res.error !== null && gw.process.exitCode !== null) log(`gateway has exited:\n${lastLines(gw.logs(), 20)}`);
    }
  }

  const v = verdicts(rows);
  printReport(rows, v);
  const integrity = RUN_INTEGRITY ? await integrityCost(cluster, endpoints.gateway, gw.process.pid!, gatewayEnv) : null;
  if (integrity) printIntegrity(integrity);
  const writers = WRITERS.length > 0 ? await writerComparison(cluster, endpoints.haproxy, haproxy.daemon.child.pid!, gatewayEnv) : null;
  const gatewayPeakRssMiB: number | null = peakRssMiB(gw.process.pid!);
  await gw.stop();
  // The recorder logs its totals when it closes: events per commit is the group-commit factor.
  const closed: RegExpExecArray | null = /"commits":(\d+),"events":(\d+)[^\n]*recorder closed/.exec(gw.logs());
  const waited: RegExpExecArray | null = /"durableWaitUs":(\d+)[^\n]*recorder closed/.exec(gw.logs());
  const gatewayStats = closed ? { commits: Number(closed[1]), events: Number(closed[2]), durableWaitUs: waited ? Number(waited[1]) : null } : null;
  console.log(`\ngateway: peak RSS ${fmt(gatewayPeakRssMiB, 1)} MiB; recorder: ${gatewayStats ? `${fmt(gatewayStats.events, 0)} events in ${fmt(gatewayStats.commits, 0)} commits ` +
    `(${(gatewayStats.events / Math.max(1, gatewayStats.commits)).toFixed(1)} events per commit; a statement waited ${fmt(gatewayStats.durableWaitUs, 0)} µs on average for its record to be durable)` : 'totals not found in its log'}; writer ${process.env.GATEHOUSE_RECORD_WRITER ?? 'default'}`);
  if (pgStore) {
    const storePeak: number | null = peakRssMiB(pgStore.gw.process.pid!);
    await pgStore.gw.stop();
    const c: RegExpExecArray | null = /"commits":(\d+),"events":(\d+)[^\n]*recorder closed/.exec(pgStore.gw.logs());
    console.log(`gateway+pgstore: peak RSS ${fmt(storePeak, 1)} MiB; recorder: ${c ? `${fmt(Number(c[2]), 0)} events in ${fmt(Number(c[1]), 0)} commits (${(Number(c[2]) / Math.max(1, Number(c[1]))).toFixed(1)} events per commit)` : 'totals not found in its log'}`);
  }

  const results = {
    startedAt,
    finishedAt: new Date().toISOString(),
    settings: { seconds: SECONDS, clients: [CLIENTS, MANY_CLIENTS], threads: THREADS, scale: SCALE, pgbench: `-S -n -c N -j ${THREADS} -T ${SECONDS}`, modes: MODE_ARGS, groups: GROUPS,
      recordWriter: process.env.GATEHOUSE_RECORD_WRITER ?? 'default' },
    machine: { cpus: cpus().length, cpuModel: cpus()[0]?.model ?? null, loadavgBefore: loadBefore, loadavgAfter: loadavg() },
    versions: {
      node: process.version,
      pgbench: await firstLine(path.join(PG_BIN, 'pgbench'), ['--version'], cleanEnv()),
      haproxy: await firstLine(tools.haproxy, ['-v'], cleanEnv()),
      pgbouncer: await firstLine(tools.pgbouncer, ['-V'], cleanEnv()),
      gatehouse: await firstLine('git', ['-C', REPO_ROOT, 'rev-parse', 'HEAD'], cleanEnv()),
    },
    notes: 'direct, haproxy and pgbouncer are plaintext on loopback; gateway is sslmode=disable, gateway+tls is sslmode=require. Targets compare the plaintext gateway.',
    rows,
    verdict: v,
    gateway: { peakRssMiB: gatewayPeakRssMiB, recorder: gatewayStats },
    integrity,
    writers,
  };
  mkdirSync(path.dirname(RESULTS_FILE), { recursive: true });
  writeFileSync(RESULTS_FILE, JSON.stringify(results, null, 2) + '\n');
  console.log(`\nresults written to ${path.relative(process.cwd(), RESULTS_FILE) || RESULTS_FILE}`);
}

const VIA_CONNECTION = 'bench-via';

/** A connector as a separate process, and a connection that reaches the cluster only through it. */
/** A second connection to the bench target, and a 20-rule policy scoped to it (none of its rules matches pgbench). */
async function applyBenchPolicy(gw: TestGateway, cluster: PgCluster, dir: string): Promise<void> {
  await gw.cliOk(['connection', 'add', POLICY_CONNECTION, '--type', 'postgres', '--host', cluster.host, '--port', String(cluster.port), '--database', DATABASE,
    '--user', UPSTREAM_USER, '--password-env', 'BENCH_UPSTREAM_PASSWORD', '--sslmode', 'disable'], { env: { BENCH_UPSTREAM_PASSWORD: UPSTREAM_PASSWORD } });
  await gw.cliOk(['grant', GATEWAY_IDENTITY, POLICY_CONNECTION]);
  const file = path.join(dir, 'bench-policy.yaml');
  writeFileSync(file, BENCH_POLICY);
  log(`policy: ${(await gw.cliOk(['policy', 'apply', file])).trim()} (scoped to connection ${POLICY_CONNECTION})`);
}

async function startBenchConnector(gw: TestGateway, cluster: PgCluster, dir: string): Promise<number> {
  const token: string = (await gw.cliOk(['connector', 'add', 'bench-edge'])).trim().split('\n').pop()!;
  const child = spawn(process.execPath, [GATEHOUSE_BIN, 'connector', '--gateway', gw.url, '--token', token, '--name', 'bench-edge',
    '--data-dir', path.join(dir, 'connector'), '--allow', `${cluster.host}:${cluster.port}`], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, GATEHOUSE_LOG_LEVEL: 'warn' } });
  onCleanup('connector', async () => { child.kill('SIGTERM'); });
  await new Promise<void>((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`connector did not connect: ${out}`)), 20_000);
    child.stdout!.on('data', (d: Buffer) => { out += d.toString(); if (out.includes('is connected')) { clearTimeout(timer); resolve(); } });
    child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`connector exited (${code}): ${out}`)); });
  });
  await gw.cliOk(['connection', 'add', VIA_CONNECTION, '--type', 'postgres', '--host', cluster.host, '--port', String(cluster.port), '--database', DATABASE,
    '--user', UPSTREAM_USER, '--password-env', 'BENCH_UPSTREAM_PASSWORD', '--via', 'bench-edge', '--sslmode', 'disable'], { env: { BENCH_UPSTREAM_PASSWORD: UPSTREAM_PASSWORD } });
  await gw.cliOk(['grant', GATEWAY_IDENTITY, VIA_CONNECTION]);
  log(`connector bench-edge connected (pid ${child.pid}); connection ${VIA_CONNECTION} goes through it`);
  return child.pid!;
}

interface IntegrityCost {
  withIntegrity: number[]; without: number[]; ratio: number | null;
  /** Gateway CPU time per transaction (µs), the steadier signal on a noisy machine. */
  cpuUsWith: number[]; cpuUsWithout: number[]; cpuRatio: number | null;
}

/** User + system CPU time of a process so far, in µs (Linux /proc). */
function cpuUs(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(fields[11]) + Number(fields[12])) * 10_000; // utime, stime in clock ticks of 10 ms
}

/**
 * What the hash chain and signatures cost the PostgreSQL path: the same gateway build with
 * integrity on and (GATEHOUSE_UNSAFE_NO_INTEGRITY=1) off, runs interleaved to share the noise.
 */
/**
 * A second gateway recording into the shared PostgreSQL store (`--store postgres://…`), on a
 * cluster of its own so that the store's WAL and fsyncs do not share the target's.
 */
async function startPgStoreGateway(target: PgCluster, env: NodeJS.ProcessEnv): Promise<{ gw: TestGateway; token: string }> {
  log('starting PostgreSQL 15 for the gateway+pgstore path (the recording store)');
  const storeCluster: PgCluster = await startPgCluster();
  onCleanup('store postgres', () => storeCluster.stop());
  await storeCluster.sql('CREATE DATABASE gstore');
  const storeUrl: string = `postgres://postgres@${storeCluster.host}:${storeCluster.port}/gstore`;
  const gw: TestGateway = await startTestGateway({ args: ['--store', storeUrl], env });
  onCleanup('gateway on the PostgreSQL store', () => gw.stop());
  const token: string = await gw.setupPostgres({ identity: GATEWAY_IDENTITY, connection: GATEWAY_CONNECTION, cluster: target, user: UPSTREAM_USER, sslmode: 'disable' });
  log(`gateway+pgstore on ${gw.pgHost}:${gw.pgPort}, store ${storeCluster.host}:${storeCluster.port}`);
  return { gw, token };
}

async function integrityCost(cluster: PgCluster, withIntegrity: Endpoint, gatewayPid: number, env: NodeJS.ProcessEnv): Promise<IntegrityCost> {
  log('integrity cost: a second gateway without hash chain and signatures');
  const plain: TestGateway = await startTestGateway({ env: { ...env, GATEHOUSE_UNSAFE_NO_INTEGRITY: '1' } });
  onCleanup('gateway without integrity', () => plain.stop());
  const token: string = await plain.setupPostgres({ identity: GATEWAY_IDENTITY, connection: GATEWAY_CONNECTION, cluster, user: UPSTREAM_USER, sslmode: 'disable' });
  const without: Endpoint = { ...withIntegrity, host: plain.pgHost, port: plain.pgPort, password: token };
  const out: IntegrityCost = { withIntegrity: [], without: [], ratio: null, cpuUsWith: [], cpuUsWithout: [], cpuRatio: null };
  const runs = [
    { target: withIntegrity, pid: gatewayPid, tps: out.withIntegrity, cpu: out.cpuUsWith },
    { target: without, pid: plain.process.pid!, tps: out.without, cpu: out.cpuUsWithout },
  ];
  for (let i = 0; i < 5 && !interrupted; i++) {
    for (const run of i % 2 === 0 ? runs : [...runs].reverse()) {
      const before = cpuUs(run.pid);
      const r: PgbenchResult = await pgbench(run.target, 'simple');
      const used = cpuUs(run.pid) - before;
      if (r.tps !== null) run.tps.push(r.tps);
      if (r.transactions) run.cpu.push(used / r.transactions);
    }
  }
  await plain.stop();
  const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  if (out.withIntegrity.length > 0 && out.without.length > 0) out.ratio = median(out.withIntegrity) / median(out.without);
  if (out.cpuUsWith.length > 0 && out.cpuUsWithout.length > 0) out.cpuRatio = median(out.cpuUsWith) / median(out.cpuUsWithout);
  return out;
}

interface WriterRun { name: string; mode: Mode; tps: number[]; cpuUs: number[]; latencyMs: number[] }

/**
 * The recording writers side by side: one gateway per writer (and HAProxy as the reference), each
 * round running every one once in alternating order, so that a machine whose load moves affects
 * all alike; medians over the rounds.
 */
async function writerComparison(cluster: PgCluster, haproxy: Endpoint, haproxyPid: number, env: NodeJS.ProcessEnv): Promise<WriterRun[]> {
  const targets: Array<{ name: string; endpoint: Endpoint; pid: number }> = [{ name: 'haproxy', endpoint: haproxy, pid: haproxyPid }];
  for (const writer of WRITERS) {
    log(`writer comparison: a gateway with recording.writer ${writer}`);
    const g: TestGateway = await startTestGateway({ env: { ...env, GATEHOUSE_RECORD_WRITER: writer } });
    onCleanup(`gateway (${writer} writer)`, () => g.stop());
    const token: string = await g.setupPostgres({ identity: GATEWAY_IDENTITY, connection: GATEWAY_CONNECTION, cluster, user: UPSTREAM_USER, sslmode: 'disable' });
    targets.push({ name: `gateway, ${writer}`, endpoint: { host: g.pgHost, port: g.pgPort, dbname: GATEWAY_CONNECTION, user: GATEWAY_IDENTITY, password: token, sslmode: 'disable' }, pid: g.process.pid! });
  }
  const runs: WriterRun[] = [];
  for (const mode of ['simple', 'prepared'] as const) {
    const byTarget = targets.map((t) => ({ t, run: { name: t.name, mode, tps: [], cpuUs: [], latencyMs: [] } as WriterRun }));
    runs.push(...byTarget.map((x) => x.run));
    for (let round = 0; round < 5 && !interrupted; round++) {
      for (const { t, run } of round % 2 === 0 ? byTarget : [...byTarget].reverse()) {
        const before = cpuUs(t.pid);
        const r: PgbenchResult = await pgbench(t.endpoint, mode);
        const used = cpuUs(t.pid) - before;
        if (r.tps !== null) run.tps.push(r.tps);
        if (r.latencyMs !== null) run.latencyMs.push(r.latencyMs);
        if (r.transactions) run.cpuUs.push(used / r.transactions);
      }
    }
  }
  const median = (xs: number[]): number | null => (xs.length === 0 ? null : [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]);
  console.log('\nRecording writers, interleaved (8 clients, 5 rounds, medians; CPU is the path\'s own process):');
  console.log('mode      path                        TPS  avg ms  CPU µs/tx  vs haproxy  TPS of each round');
  for (const r of runs) {
    const ref = runs.find((x) => x.mode === r.mode && x.name === 'haproxy');
    const tps = median(r.tps);
    const ratio = tps !== null && ref && median(ref.tps) ? `${(tps / median(ref.tps)!).toFixed(2)}x` : '';
    console.log(`${r.mode.padEnd(9)} ${r.name.padEnd(22)} ${fmt(tps, 0).padStart(8)} ${fmt(median(r.latencyMs), 3).padStart(7)} ${fmt(median(r.cpuUs), 1).padStart(10)} ${ratio.padStart(11)}  ${r.tps.map((x) => fmt(x, 0)).join(', ')}`);
  }
  return runs;
}

function printIntegrity(c: IntegrityCost): void {
  const f = (xs: number[]): string => xs.map((x) => fmt(x, 0)).join(', ');
  const us = (xs: number[]): string => xs.map((x) => x.toFixed(1)).join(', ');
  console.log('\nIntegrity cost (gateway, simple protocol, no TLS; 5 interleaved pairs):');
  console.log(`  with hash chain + signatures:    ${f(c.withIntegrity)} tps; gateway CPU ${us(c.cpuUsWith)} µs/transaction`);
  console.log(`  without (benchmark-only switch): ${f(c.without)} tps; gateway CPU ${us(c.cpuUsWithout)} µs/transaction`);
  if (c.ratio !== null) {
    const cost = (1 - c.ratio) * 100;
    console.log(`  ${cost <= 5 ? 'MET    ' : 'NOT MET'} integrity costs ${cost.toFixed(1)}% TPS (median vs median; target ≤ 5%)`);
  }
  if (c.cpuRatio !== null) console.log(`          and ${((c.cpuRatio - 1) * 100).toFixed(1)}% more gateway CPU per transaction (median vs median)`);
}

try {
  await main();
} catch (err) {
  console.error(`bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  process.exitCode = 1;
} finally {
  await cleanupAll();
}
