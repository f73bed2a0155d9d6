// Throwaway PostgreSQL 15 cluster for tests.
//
// The cluster lives in a fresh mkdtemp directory (owned by the `postgres` OS user,
// because postgres refuses to run as root), listens on 127.0.0.1:<free port> and
// puts its unix socket in that same temp directory, so it never collides with a
// system cluster on 5432.
//
// Layout of the temp dir:
//   <tmp>/data           data directory
//   <tmp>/postgres.log   server stderr (pg_ctl -l)
//   <tmp>/.s.PGSQL.<port> unix socket
import { execFileSync } from 'node:child_process';
import { appendFileSync, chownSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import type { AddressInfo, Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run } from './processes.ts';
import type { RunResult } from './processes.ts';

export const PG_BIN: string = '/usr/lib/postgresql/15/bin';

export interface PgCluster {
  host: string; // '127.0.0.1'
  port: number;
  dataDir: string;
  logFile: string; // server log (stderr of postgres)
  superuser: string; // 'postgres'
  /** Run SQL as the superuser via psql over TCP (-XAtq, ON_ERROR_STOP); returns stdout without its final newline. Throws with stderr on failure. */
  sql(query: string, db?: string): Promise<string>;
  /** The server's self-signed TLS certificate (PEM; issued for 127.0.0.1): the CA for sslmode verify-full. */
  caPem: string;
  /** pg_ctl stop -m immediate, then rm -rf the temp dir. Idempotent. */
  stop(): Promise<void>;
}

export interface StartPgClusterOptions {
  /** Extra server settings, e.g. { log_statement: 'all' }. Written to postgresql.conf before start. */
  settings?: Record<string, string>;
}

/** Well-known test roles created in every cluster. */
export const PG_TEST_USERS = {
  scram: { user: 'scram_user', password: 'scram-secret' },
  md5: { user: 'md5_user', password: 'md5-secret' },
  trust: { user: 'trust_user' },
} as const;

const OS_USER: string = 'postgres';
const HOST: string = '127.0.0.1';
const START_ATTEMPTS: number = 5;

const PG_HBA: string = [
  '# written by test/support/pg-cluster.ts',
  '# TYPE  DATABASE  USER        ADDRESS       METHOD',
  'local   all       all                       trust',
  'host    all       postgres    127.0.0.1/32  trust',
  'host    all       scram_user  127.0.0.1/32  scram-sha-256',
  'host    all       md5_user    127.0.0.1/32  md5',
  'host    all       trust_user  127.0.0.1/32  trust',
  'host    all       all         127.0.0.1/32  reject',
  'host    all       all         ::1/128       reject',
  'local   replication all                     trust',
  'host    replication all       0.0.0.0/0     reject',
  '',
].join('\n');

/** Bind 127.0.0.1:0, read the kernel-assigned port, close. */
export function freePort(): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    const srv: Server = createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen(0, HOST, () => {
      const port: number = (srv.address() as AddressInfo).port;
      srv.close((err?: Error) => (err ? reject(err) : resolve(port)));
    });
  });
}

let cachedIds: { uid: number; gid: number } | undefined;
function postgresIds(): { uid: number; gid: number } {
  if (cachedIds === undefined) {
    const uid: number = Number(execFileSync('id', ['-u', OS_USER], { encoding: 'utf8' }).trim());
    const gid: number = Number(execFileSync('id', ['-g', OS_USER], { encoding: 'utf8' }).trim());
    cachedIds = { uid, gid };
  }
  return cachedIds;
}

/** Environment for child processes without any PG* variables leaking in from the caller. */
function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith('PG')) env[k] = v;
  }
  return { ...env, LC_ALL: 'C', ...extra };
}

/** Run a PostgreSQL server binary as the postgres OS user. */
function runAsPostgres(bin: string, args: string[], cwd: string, timeoutMs: number = 60_000): Promise<RunResult> {
  return run('runuser', ['-u', OS_USER, '--', join(PG_BIN, bin), ...args], {
    env: cleanEnv(),
    cwd, // postgres may not be able to read the caller's cwd
    timeoutMs,
  });
}

function describe(what: string, r: RunResult): string {
  return `${what} failed (code ${r.code}, signal ${r.signal})\nstdout: ${r.stdout}\nstderr: ${r.stderr}`;
}

/** postgresql.conf string literal. */
function confQuote(value: string): string {
  return `'${value.replace(/\\/g, '\\\\').replace(/'/g, "''")}'`;
}

function readPostmasterPid(dataDir: string): number | undefined {
  try {
    const pid: number = Number(readFileSync(join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

function rmTmp(dir: string): void {
  rmSync(dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 50 });
}

// Last-resort cleanup if a test run exits without calling stop().
const live: Map<string, string> = new Map(); // tmp dir -> data dir
let exitHookInstalled: boolean = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const [tmp, dataDir] of live) {
      // Synchronous stop: the temp dir can only be removed once postgres has exited.
      try {
        execFileSync('runuser', ['-u', OS_USER, '--', join(PG_BIN, 'pg_ctl'), 'stop', '-D', dataDir, '-m', 'immediate', '-w', '-t', '10'], {
          cwd: tmp,
          env: cleanEnv(),
          stdio: 'ignore',
          timeout: 15_000,
        });
      } catch {
        const pid: number | undefined = readPostmasterPid(dataDir);
        if (pid !== undefined) {
          try {
            process.kill(pid, 'SIGQUIT'); // immediate shutdown
          } catch {
            // already gone
          }
        }
      }
      try {
        rmTmp(tmp);
      } catch {
        // best effort
      }
    }
    live.clear();
  });
}

export async function startPgCluster(opts: StartPgClusterOptions = {}): Promise<PgCluster> {
  const { uid, gid } = postgresIds();
  const tmp: string = mkdtempSync(join(tmpdir(), 'gatehouse-pg-'));
  chownSync(tmp, uid, gid);
  const dataDir: string = join(tmp, 'data');
  const logFile: string = join(tmp, 'postgres.log');
  installExitHook();
  live.set(tmp, dataDir);

  let started: boolean = false;
  let stopped: boolean = false;
  let port: number = 0;
  let caPem = '';

  const psql = async (query: string, db: string): Promise<string> => {
    const r: RunResult = await run(
      join(PG_BIN, 'psql'),
      ['-XAtq', '-v', 'ON_ERROR_STOP=1', '-h', HOST, '-p', String(port), '-U', OS_USER, '-d', db, '-f', '-'],
      { env: cleanEnv({ PGCONNECT_TIMEOUT: '10' }), input: query, timeoutMs: 60_000 },
    );
    if (r.code !== 0) throw new Error(`psql -d ${db} failed (code ${r.code}): ${r.stderr.trim()}\nquery: ${query}`);
    return r.stdout.endsWith('\n') ? r.stdout.slice(0, -1) : r.stdout;
  };

  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    try {
      if (started || existsSync(join(dataDir, 'postmaster.pid'))) {
        const r: RunResult = await runAsPostgres('pg_ctl', ['stop', '-D', dataDir, '-m', 'immediate', '-w', '-t', '30'], tmp);
        if (r.code !== 0) {
          const pid: number | undefined = readPostmasterPid(dataDir);
          if (pid !== undefined) {
            try {
              process.kill(pid, 'SIGQUIT');
            } catch {
              // already gone
            }
          }
        }
      }
    } finally {
      rmTmp(tmp);
      live.delete(tmp);
    }
  };

  try {
    const init: RunResult = await runAsPostgres(
      'initdb',
      ['-D', dataDir, '--auth=trust', '-N', '-U', OS_USER, '-E', 'UTF8', '--locale=C', '--no-instructions'],
      tmp,
    );
    if (init.code !== 0) throw new Error(describe('initdb', init));

    // TLS as a production server has it (the gateway requires TLS to targets by default): a
    // self-signed certificate for 127.0.0.1, which tests can also pin as the CA (verify-full).
    const cert = await run('runuser', ['-u', OS_USER, '--', 'openssl', 'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1',
      '-nodes', '-keyout', join(dataDir, 'server.key'), '-out', join(dataDir, 'server.crt'), '-days', '7', '-subj', `/CN=${HOST}`,
      '-addext', `subjectAltName=IP:${HOST}`], { env: cleanEnv(), cwd: tmp, timeoutMs: 30_000 });
    if (cert.code !== 0) throw new Error(describe('openssl req', cert));
    caPem = readFileSync(join(dataDir, 'server.crt'), 'utf8');
    const settings: Record<string, string> = {
      listen_addresses: HOST,
      unix_socket_directories: tmp,
      max_connections: '200',
      ssl: 'on',
      ...(opts.settings ?? {}),
    };
    const conf: string =
      '\n# added by test/support/pg-cluster.ts\n' +
      Object.entries(settings)
        .map(([k, v]) => `${k} = ${confQuote(v)}\n`)
        .join('');
    appendFileSync(join(dataDir, 'postgresql.conf'), conf);
    // Written before the first start, so no reload is needed; the roles it names are created below.
    writeFileSync(join(dataDir, 'pg_hba.conf'), PG_HBA);

    // The port is picked by freePort() and could be grabbed by someone else before
    // postgres binds it; retry with a new port in that case.
    for (let attempt: number = 1; ; attempt++) {
      port = await freePort();
      const r: RunResult = await runAsPostgres(
        'pg_ctl',
        ['start', '-D', dataDir, '-l', logFile, '-w', '-t', '60', '-o', `-p ${port}`],
        tmp,
        90_000,
      );
      if (r.code === 0) {
        started = true;
        break;
      }
      const log: string = existsSync(logFile) ? readFileSync(logFile, 'utf8') : '';
      if (attempt < START_ATTEMPTS && /Address already in use|could not bind/i.test(log)) {
        writeFileSync(logFile, ''); // keep the log about the run that worked
        continue;
      }
      throw new Error(`${describe('pg_ctl start', r)}\nserver log:\n${log}`);
    }

    await psql(
      [
        'CREATE DATABASE app OWNER postgres;',
        "SET password_encryption = 'scram-sha-256';",
        "CREATE ROLE scram_user LOGIN PASSWORD 'scram-secret';",
        "SET password_encryption = 'md5';",
        "CREATE ROLE md5_user LOGIN PASSWORD 'md5-secret';",
        'CREATE ROLE trust_user LOGIN;',
        'GRANT ALL ON DATABASE app TO scram_user, md5_user, trust_user;',
        '',
      ].join('\n'),
      'postgres',
    );
    await psql('GRANT ALL ON SCHEMA public TO scram_user, md5_user, trust_user;\n', 'app');
  } catch (e) {
    await stop().catch(() => {});
    throw e;
  }

  return {
    host: HOST,
    port,
    dataDir,
    logFile,
    superuser: OS_USER,
    caPem,
    sql: (query: string, db: string = 'postgres'): Promise<string> => psql(query, db),
    stop,
  };
}
