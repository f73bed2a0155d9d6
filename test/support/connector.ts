// Runs a connector as a separate process (`gatehouse connector …`), the way an operator would:
// enroll it with a token from `gatehouse connector add`, wait for its "is connected" line, kill it
// with any signal, restart it from its data directory, read its log.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { GATEHOUSE_BIN, type TestGateway } from './gateway.ts';

export interface ConnectorOptions {
  /** The gateway's API URL (`--gateway`). */
  gateway: string;
  name: string;
  dataDir: string;
  /** HOST:PORT targets (`--allow`). */
  allow: string[];
  /** Enrollment token; omit to start from the credential in the data directory. */
  token?: string;
  /** Extra command-line arguments (--gateway-fingerprint, --gateway-ca, --insecure-http, …). */
  args?: string[];
  /** Extra environment (HTTPS_PROXY, …). Proxy variables of the caller are never inherited. */
  env?: NodeJS.ProcessEnv;
  /** Wait for the "connector NAME is connected" line (default true). */
  waitConnected?: boolean;
  timeoutMs?: number;
}

export interface ConnectorProcess {
  name: string;
  dataDir: string;
  options: ConnectorOptions;
  process: ChildProcess;
  pid: number;
  /** Everything written to stdout so far. */
  stdout(): string;
  /** Everything written to stderr (the connector's structured log) so far. */
  logs(): string;
  /** Settles when the process has exited. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** True while the process runs. */
  readonly running: boolean;
  /** Sends `signal` (default SIGKILL) and waits for the exit. */
  kill(signal?: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Waits until the "is connected" line has been printed. */
  waitConnected(timeoutMs?: number): Promise<void>;
  /** Kills this process if it still runs, then starts the connector again from the same data directory, without a token. */
  restart(opts?: Partial<ConnectorOptions>): Promise<ConnectorProcess>;
}

const live = new Set<ChildProcess>();
const tempDirs = new Set<string>();
process.on('exit', () => {
  for (const child of live) {
    try { child.kill('SIGKILL'); } catch { /* gone */ }
  }
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
});

function connectorEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (/^(https?_proxy|all_proxy|no_proxy|GATEHOUSE_TOKEN|GATEHOUSE_URL|GATEHOUSE_GATEWAY_FINGERPRINT|GATEHOUSE_GATEWAY_CA|GATEHOUSE_INSECURE_HTTP)$/i.test(k)) continue;
    env[k] = v;
  }
  return { ...env, GATEHOUSE_LOG_LEVEL: 'debug', ...extra };
}

export function tempDataDir(prefix = 'gatehouse-connector-'): string {
  // A path that does not exist yet: enrollment creates it (and a refused one must not).
  // Removed when the test process exits.
  const parent = mkdtempSync(path.join(tmpdir(), prefix));
  tempDirs.add(parent);
  return path.join(parent, 'data');
}

export async function startConnector(opts: ConnectorOptions): Promise<ConnectorProcess> {
  const args = [GATEHOUSE_BIN, 'connector', '--gateway', opts.gateway, '--name', opts.name, '--data-dir', opts.dataDir];
  if (opts.allow.length > 0) args.push('--allow', opts.allow.join(','));
  if (opts.token !== undefined) args.push('--token', opts.token);
  args.push(...(opts.args ?? []));
  const child = spawn(process.execPath, args, { env: connectorEnv(opts.env), stdio: ['ignore', 'pipe', 'pipe'] });
  live.add(child);
  let stdout = '';
  let stderr = '';
  let wake: (() => void) | null = null;
  child.stdout!.on('data', (d: Buffer) => { stdout += d.toString(); wake?.(); });
  child.stderr!.on('data', (d: Buffer) => { stderr += d.toString(); wake?.(); });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => {
      live.delete(child);
      // Let the pipes drain so logs() holds the last lines.
      let pending = 2;
      const done = (): void => { if (--pending === 0) { wake?.(); resolve({ code, signal }); } };
      if (child.stdout!.readableEnded) done(); else child.stdout!.once('close', done);
      if (child.stderr!.readableEnded) done(); else child.stderr!.once('close', done);
    });
  });
  let hasExited = false;
  void exited.then(() => { hasExited = true; });
  const connectedLine = `connector ${opts.name} is connected`;

  const cp: ConnectorProcess = {
    name: opts.name,
    dataDir: opts.dataDir,
    options: opts,
    process: child,
    pid: child.pid!,
    stdout: () => stdout,
    logs: () => stderr,
    exited,
    get running() { return !hasExited; },
    async kill(signal: NodeJS.Signals = 'SIGKILL') {
      if (!hasExited) child.kill(signal);
      return exited;
    },
    async waitConnected(timeoutMs = opts.timeoutMs ?? 20_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        if (stdout.includes(connectedLine)) return;
        if (hasExited) {
          const e = await exited;
          throw new Error(`connector ${opts.name} exited (code ${e.code}, signal ${e.signal}) before connecting\nstdout: ${stdout}\nstderr: ${stderr}`);
        }
        const remaining = deadline - Date.now();
        if (remaining <= 0) throw new Error(`connector ${opts.name} did not connect within ${timeoutMs} ms\nstdout: ${stdout}\nstderr: ${stderr}`);
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, Math.min(remaining, 200));
          wake = () => { clearTimeout(timer); resolve(); };
        });
        wake = null;
      }
    },
    async restart(more: Partial<ConnectorOptions> = {}) {
      await cp.kill('SIGKILL');
      const { token: _token, ...rest } = opts;
      return startConnector({ ...rest, ...more });
    },
  };
  if (opts.waitConnected !== false) {
    try {
      await cp.waitConnected();
    } catch (err) {
      await cp.kill('SIGKILL');
      throw err;
    }
  }
  return cp;
}

/** `gatehouse connector add NAME` → the enrollment token (its last stdout line). */
export async function addConnector(gw: TestGateway, name: string): Promise<string> {
  const out = await gw.cliOk(['connector', 'add', name]);
  const token = out.trim().split('\n').pop()!.trim();
  if (!token) throw new Error(`connector add ${name} printed no token`);
  return token;
}

/** Adds a connector, runs it as a separate process, and waits until the gateway lists it as connected. */
export async function enrollConnector(gw: TestGateway, name: string, allow: string[], opts: Partial<ConnectorOptions> = {}): Promise<ConnectorProcess> {
  const token = await addConnector(gw, name);
  const c = await startConnector({ gateway: gw.url, name, dataDir: opts.dataDir ?? tempDataDir(), allow, token, ...opts });
  await waitForConnectorStatus(gw, name, 'connected');
  return c;
}

export interface ConnectorListEntry {
  name: string; status: string; enrolledAt: string | null; version: string | null; address: string | null;
  lastSeen: string | null; tunnels: number; openStreams: number; allow: string[];
}

/** `gatehouse connector list --json`. */
export async function listConnectors(gw: TestGateway): Promise<ConnectorListEntry[]> {
  return JSON.parse(await gw.cliOk(['connector', 'list', '--json'])) as ConnectorListEntry[];
}

/** Polls `connector list --json` until NAME has `status`; returns its entry. */
export async function waitForConnectorStatus(gw: TestGateway, name: string, status: string, timeoutMs = 20_000): Promise<ConnectorListEntry> {
  const deadline = Date.now() + timeoutMs;
  let last: ConnectorListEntry | undefined;
  for (;;) {
    last = (await listConnectors(gw)).find((c) => c.name === name);
    if (last?.status === status) return last;
    if (Date.now() > deadline) throw new Error(`connector ${name} is not "${status}" after ${timeoutMs} ms: ${JSON.stringify(last)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Waits until `text` (a string or pattern) appears in what `read` returns. */
export async function waitForText(read: () => string, text: string | RegExp, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const found = (): boolean => (typeof text === 'string' ? read().includes(text) : text.test(read()));
  while (!found()) {
    if (Date.now() > deadline) throw new Error(`"${String(text)}" did not appear within ${timeoutMs} ms in:\n${read().slice(-4000)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

// ---- shared by the connector tests: connections, clients and recordings ------------------------

/** `gatehouse connection add NAME … --via V…` to `host:port` (default: the cluster's), as scram_user, and a grant for `identity`. */
export async function addViaConnection(gw: TestGateway, o: {
  name: string; via: string[]; host: string; port: number; identity?: string; database?: string; user?: string; password?: string;
}): Promise<void> {
  const args = ['connection', 'add', o.name, '--type', 'postgres', '--host', o.host, '--port', String(o.port),
    '--database', o.database ?? 'app', '--user', o.user ?? 'scram_user', '--password-env', 'TEST_TARGET_PASSWORD'];
  for (const v of o.via) args.push('--via', v);
  await gw.cliOk(args, { env: { TEST_TARGET_PASSWORD: o.password ?? 'scram-secret' } });
  if (o.identity) await gw.cliOk(['grant', o.identity, o.name]);
}

/** The environment for libpq tools: no PG* variables of the caller. */
export function pgEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('PG')) env[k] = v;
  return { ...env, PGCONNECT_TIMEOUT: '10', ...extra };
}

export interface SessionSummary {
  id: string; identity: { name: string }; connection: string; startedAt: string; endedAt: string | null; endReason: string | null; eventCount: number;
  target: { host: string; port: number; database: string; user: string };
}
export interface RecordedEvent { seq: number; ts: string; tsUs: number; type: string; data: Record<string, unknown> }
export interface Recording { session: SessionSummary; events: RecordedEvent[] }

export async function api<T>(gw: TestGateway, p: string, init: RequestInit = {}): Promise<T> {
  const res = await fetch(`${gw.url}${p}`, { ...init, headers: { authorization: `Bearer ${gw.adminToken}`, ...(init.headers ?? {}) } });
  if (res.status !== 200) throw new Error(`GET ${p}: HTTP ${res.status} ${await res.text()}`);
  return (await res.json()) as T;
}

/** Recorded sessions (newest first), optionally of one identity / connection. */
export function listSessions(gw: TestGateway, filter: { identity?: string; connection?: string } = {}): Promise<SessionSummary[]> {
  const q = new URLSearchParams({ limit: '10000', ...filter });
  return api<SessionSummary[]>(gw, `/api/v1/sessions?${q.toString()}`);
}

export function getRecording(gw: TestGateway, id: string): Promise<Recording> {
  return api<Recording>(gw, `/api/v1/sessions/${id}`);
}

/** Sessions not in `before` (oldest first), once `count` of them exist and all have ended. */
export async function waitForNewSessions(gw: TestGateway, before: Set<string>, count: number, filter: { identity?: string; connection?: string } = {}, timeoutMs = 15_000): Promise<SessionSummary[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const fresh = (await listSessions(gw, filter)).filter((s) => !before.has(s.id));
    if (fresh.length >= count && fresh.every((s) => s.endedAt !== null)) return fresh.sort((a, b) => (a.startedAt < b.startedAt ? -1 : a.startedAt > b.startedAt ? 1 : a.id < b.id ? -1 : 1));
    if (Date.now() > deadline) throw new Error(`expected ${count} ended new sessions, have: ${JSON.stringify(fresh.map((s) => ({ id: s.id, endedAt: s.endedAt, endReason: s.endReason })))}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

export async function sessionIds(gw: TestGateway, filter: { identity?: string; connection?: string } = {}): Promise<Set<string>> {
  return new Set((await listSessions(gw, filter)).map((s) => s.id));
}
