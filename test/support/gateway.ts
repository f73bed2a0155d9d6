// Starts a real gateway process (`gatehouse up`) on free loopback ports with a throwaway data
// directory, and offers the CLI and libpq clients pointed at it.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { run, type RunResult } from './processes.ts';
import type { PgCluster } from './pg-cluster.ts';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const GATEHOUSE_BIN = path.join(REPO_ROOT, 'bin', 'gatehouse.js');

export interface TestGateway {
  process: ChildProcess;
  dataDir: string;
  url: string;
  httpPort: number;
  /** SHA256:… of the API's certificate when it serves https (its `api cert:` line); cli() pins it. */
  apiFingerprint?: string;
  pgHost: string;
  pgPort: number;
  /** The SSH listener (shells, exec, sftp/scp, Git over SSH). */
  sshPort: number;
  /** Where connectors' tunnels arrive. */
  connectorPort: number;
  adminToken: string;
  /** Everything the gateway wrote to stderr (its structured log) so far. */
  logs(): string;
  /** Runs `gatehouse ARGS` against this gateway as admin (or with `token`). */
  cli(args: string[], opts?: { token?: string; env?: NodeJS.ProcessEnv }): Promise<RunResult>;
  /** Like cli() but throws on a non-zero exit; returns stdout. */
  cliOk(args: string[], opts?: { token?: string; env?: NodeJS.ProcessEnv }): Promise<string>;
  /** Creates identity + token + connection to `cluster` as `user` + grant; returns the token. */
  setupPostgres(opts: { identity: string; connection: string; cluster: PgCluster; user?: string; password?: string; database?: string; kind?: string; grant?: boolean; sslmode?: string; requireAuth?: string }): Promise<string>;
  /** libpq connection string for psql/pgbench through the gateway. */
  dsn(connection: string, identity: string, extra?: string): string;
  stop(): Promise<void>;
  /** SIGKILL, keeping the data directory (for restart tests). */
  kill(): Promise<void>;
}

export interface StartOptions {
  dataDir?: string;
  env?: NodeJS.ProcessEnv;
  args?: string[];
  keepDataDir?: boolean;
}

export function newToken(): string {
  return 'ght_' + randomBytes(32).toString('base64url');
}

export async function startTestGateway(opts: StartOptions = {}): Promise<TestGateway> {
  const dataDir = opts.dataDir ?? mkdtempSync(path.join(tmpdir(), 'gatehouse-test-'));
  const adminToken = newToken();
  const child = spawn(process.execPath, [GATEHOUSE_BIN, 'up', '--data-dir', dataDir, '--http', '127.0.0.1:0', '--pg', '127.0.0.1:0', '--ssh', '127.0.0.1:0', '--connector-listen', '127.0.0.1:0', ...(opts.args ?? [])], {
    env: { ...process.env, GATEHOUSE_ADMIN_TOKEN: adminToken, GATEHOUSE_LOG_LEVEL: 'debug',
      // Tests sign in wrongly from loopback on purpose and often; the limit's own tests set it back (test/access/auth-rate-limit.test.ts).
      GATEHOUSE_AUTH_EXEMPT_LOOPBACK: '1', ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d: Buffer) => { stdout += d.toString(); });
  child.stderr!.on('data', (d: Buffer) => { stderr += d.toString(); });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));

  const deadline = Date.now() + 20_000;
  let api: RegExpExecArray | null = null;
  let pg: RegExpExecArray | null = null;
  let tunnel: RegExpExecArray | null = null;
  let ssh: RegExpExecArray | null = null;
  while (Date.now() < deadline) {
    api = /api:\s+https?:\/\/([\d.]+):(\d+)/.exec(stdout);
    pg = /postgres:\s+([\d.]+):(\d+)/.exec(stdout);
    tunnel = /connectors:\s+([\d.]+):(\d+)/.exec(stdout);
    ssh = /ssh:\s+([\d.]+):(\d+)/.exec(stdout);
    if (api && pg && tunnel && ssh) break;
    if (child.exitCode !== null) throw new Error(`gateway exited with ${child.exitCode}:\n${stderr}`);
    await new Promise((r) => setTimeout(r, 25));
  }
  if (!api || !pg) {
    child.kill('SIGKILL');
    throw new Error(`gateway did not start in time:\n${stdout}\n${stderr}`);
  }
  const scheme = /api:\s+https:/.test(stdout) ? 'https' : 'http';
  const url = `${scheme}://${api[1]}:${api[2]}`;
  const apiFingerprint = /api cert:\s+(SHA256:\S+)/.exec(stdout)?.[1];
  const pgHost = pg[1];
  const pgPort = Number(pg[2]);

  const cli = (args: string[], o: { token?: string; env?: NodeJS.ProcessEnv } = {}): Promise<RunResult> =>
    run(process.execPath, [GATEHOUSE_BIN, ...args], {
      env: { ...process.env, GATEHOUSE_URL: url, GATEHOUSE_TOKEN: o.token ?? adminToken, ...(apiFingerprint ? { GATEHOUSE_GATEWAY_FINGERPRINT: apiFingerprint } : {}), ...o.env },
      timeoutMs: 30_000,
    });
  const cliOk = async (args: string[], o: { token?: string; env?: NodeJS.ProcessEnv } = {}): Promise<string> => {
    const r = await cli(args, o);
    if (r.code !== 0) throw new Error(`gatehouse ${args.join(' ')} failed (${r.code}): ${r.stderr}${r.stdout}`);
    return r.stdout;
  };

  const gw: TestGateway = {
    process: child, dataDir, url, httpPort: Number(api[2]), apiFingerprint, pgHost, pgPort, sshPort: Number(ssh?.[2] ?? 0), connectorPort: Number(tunnel?.[2] ?? 0), adminToken,
    logs: () => stderr,
    cli, cliOk,
    async setupPostgres(o) {
      const user = o.user ?? 'scram_user';
      const password = o.password ?? (user === 'scram_user' ? 'scram-secret' : user === 'md5_user' ? 'md5-secret' : undefined);
      await cliOk(['identity', 'add', o.identity, '--kind', o.kind ?? 'agent']).catch((err: Error) => {
        if (!/already exists/.test(err.message)) throw err;
      });
      const args = ['connection', 'add', o.connection, '--type', 'postgres', '--host', o.cluster.host, '--port', String(o.cluster.port),
        '--database', o.database ?? 'app', '--user', user];
      const env: NodeJS.ProcessEnv = {};
      if (password !== undefined) { args.push('--password-env', 'TEST_TARGET_PASSWORD'); env.TEST_TARGET_PASSWORD = password; }
      // The fixture's md5 role: the gateway allows only SCRAM unless told otherwise.
      if (o.requireAuth ?? (user === 'md5_user' ? 'md5' : undefined)) args.push('--require-auth', o.requireAuth ?? 'md5');
      if (o.sslmode) args.push('--sslmode', o.sslmode);
      await cliOk(args, { env });
      if (o.grant !== false) await cliOk(['grant', o.identity, o.connection]);
      const out = await cliOk(['token', 'issue', o.identity, '--ttl', '1h']);
      return out.trim().split('\n').pop()!;
    },
    dsn(connection, identity, extra = '') {
      return `host=${pgHost} port=${pgPort} dbname=${connection} user=${identity} sslmode=require ${extra}`.trim();
    },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
        await exited;
        clearTimeout(timer);
      }
      if (!opts.keepDataDir && !opts.dataDir) rmSync(dataDir, { recursive: true, force: true });
    },
    async kill() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGKILL');
        await exited;
      }
    },
  };
  return gw;
}
