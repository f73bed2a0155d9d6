// Throwaway OpenSSH server for tests.
//
// `/usr/sbin/sshd -D -e -f <tmp>/sshd_config` listens on 127.0.0.1:<free port> with its own
// host keys (ed25519 by default; any mix of ed25519, RSA and ECDSA with hostKeyTypes) and its own
// AuthorizedKeysFile; everything lives in a fresh mkdtemp directory
// that stop() removes. The current OS user (root in CI) logs in with the generated client key;
// when running as root the local user `gh-ssh-test` is created (once) for password logins.
//
// Layout of the temp dir (mode 0755 so that other login users can read authorized_keys):
//   sshd_config, sshd.pid
//   host_<type>[.pub]     host keys, one per hostKeyTypes entry (replaced by restartWithNewHostKey())
//   client_ed25519[.pub]  key accepted for every user
//   authorized_keys
//   sshd.log              sshd's stderr (LogLevel VERBOSE), read with logs()
import { execFileSync, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  appendFileSync, chmodSync, closeSync, copyFileSync, existsSync, lstatSync, mkdirSync, mkdtempSync, openSync,
  readdirSync, readFileSync, rmSync, statSync, writeFileSync,
} from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { freePort } from './pg-cluster.ts';
import { run } from './processes.ts';
import type { RunResult } from './processes.ts';

export const SSHD_BIN: string = '/usr/sbin/sshd';
/** Local user for password / keyboard-interactive logins (created when running as root). */
export const PASSWORD_USER: string = 'gh-ssh-test';

const HOST: string = '127.0.0.1';
const START_ATTEMPTS: number = 5;

export interface Sshd {
  host: string; // '127.0.0.1'
  port: number;
  /** Login user accepted with clientKeyFile: the current OS user (root in CI). */
  user: string;
  /** "ssh-ed25519 AAAA..." (no comment) of the first host key. Changes with restartWithNewHostKey(). */
  hostKeyPublic: string;
  /** "SHA256:..." of the first host key, as `ssh-keygen -l` prints it. Changes with restartWithNewHostKey(). */
  hostKeyFingerprint: string;
  /** Private file of the first host key. */
  hostKeyFile: string;
  /** Every host key the server has, in hostKeyTypes order. Changes with restartWithNewHostKey(). */
  hostKeys: SshdHostKey[];
  /** Private key (no passphrase) that the server accepts for `user` (and for PASSWORD_USER). */
  clientKeyFile: string;
  /** "ssh-ed25519 AAAA... comment" of clientKeyFile. */
  clientPublicKey: string;
  /** Password login for PASSWORD_USER; undefined when not running as root (see passwordSkipReason). */
  passwordLogin: { user: string; password: string } | undefined;
  /** Why passwordLogin is undefined, for `t.skip(...)`. */
  passwordSkipReason: string | undefined;
  /** The temp dir; removed by stop(). */
  dir: string;
  logFile: string;
  /** Everything sshd (and its per-connection children) logged so far. */
  logs(): string;
  /** Adds a public key line to the shared AuthorizedKeysFile (read per connection, no restart needed). */
  authorizeKey(publicKey: string): void;
  /** known_hosts line for this server's first host key: "[127.0.0.1]:PORT ssh-ed25519 AAAA...". */
  knownHostsLine(): string;
  /** Stops sshd, generates fresh host keys and starts again on the same port (existing sessions are killed). */
  restartWithNewHostKey(): Promise<void>;
  /** Kills sshd and all its session processes, then rm -rf the temp dir. Idempotent. */
  stop(): Promise<void>;
}

export interface StartSshdOptions {
  /**
   * UsePAM yes: password and keyboard-interactive logins go through PAM (the client then sees
   * keyboard-interactive "Password:" prompts). Default false: sshd checks /etc/shadow itself and
   * offers only `password` (no keyboard-interactive).
   */
  pam?: boolean;
  /** Use this private host key (copied into the temp dir) as the first host key instead of generating one. */
  hostKeyFile?: string;
  /** Host key types the server has (default ['ed25519']); the first one is hostKeyPublic. */
  hostKeyTypes?: HostKeyType[];
  /** Extra or overriding sshd_config directives, e.g. { MaxSessions: '1' }. */
  config?: Record<string, string>;
}

export type HostKeyType = 'ed25519' | 'rsa' | 'ecdsa';

export interface SshdHostKey {
  /** Key type as in the public line: "ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256". */
  type: string;
  /** "type AAAA..." (no comment). */
  publicKey: string;
  /** "SHA256:..." as `ssh-keygen -l` prints it. */
  fingerprint: string;
  /** Private key file. */
  file: string;
}

export interface ClientKey {
  privateKeyFile: string;
  /** "ssh-ed25519 AAAA... comment" */
  publicKey: string;
}

/** `ssh-keygen -q -N ''` a new key pair `dir/<name>` (default name id_<type>). */
export async function generateClientKey(dir: string, type: 'ed25519' | 'rsa' | 'ecdsa' = 'ed25519', name?: string): Promise<ClientKey> {
  const privateKeyFile: string = join(dir, name ?? `id_${type}`);
  await keygen(['-q', '-t', type, '-N', '', '-C', `gatehouse-test-${type}`, '-f', privateKeyFile]);
  return { privateKeyFile, publicKey: readFileSync(`${privateKeyFile}.pub`, 'utf8').trim() };
}

async function keygen(args: string[]): Promise<string> {
  const r: RunResult = await run('ssh-keygen', args, { timeoutMs: 30_000 });
  if (r.code !== 0) throw new Error(`ssh-keygen ${args.join(' ')} failed (code ${r.code}): ${r.stderr}`);
  return r.stdout;
}

/** "SHA256:..." of a public key file, as `ssh-keygen -l` prints it. */
export async function fingerprint(publicKeyFile: string): Promise<string> {
  return (await keygen(['-l', '-E', 'sha256', '-f', publicKeyFile])).split(' ')[1];
}

// ---------------------------------------------------------------------------------------------
// gh-ssh-test: created once per machine; its random password is kept in a root-only file so
// that concurrent test processes agree on it.

const PASSWORD_FILE: string = join(tmpdir(), `gatehouse-${PASSWORD_USER}.password`);
let passwordCache: { user: string; password: string } | undefined;

function userExists(name: string): boolean {
  try {
    execFileSync('id', ['-u', name], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

function readPasswordFile(): string | undefined {
  try {
    const st = lstatSync(PASSWORD_FILE);
    if (!st.isFile() || st.uid !== 0 || (st.mode & 0o077) !== 0) return undefined; // not ours: ignore
    const pw: string = readFileSync(PASSWORD_FILE, 'utf8').trim();
    return pw === '' ? undefined : pw;
  } catch {
    return undefined;
  }
}

/** Why PASSWORD_USER can't be used here, or undefined when it can. */
export function passwordUserSkipReason(): string | undefined {
  const uid: number | undefined = process.getuid?.();
  if (uid !== 0) return `password logins need root (to create the local user ${PASSWORD_USER} and let sshd check its password); running as uid ${uid}`;
  return undefined;
}

/** Creates PASSWORD_USER if missing and returns its password. Throws when not root. */
export function ensurePasswordUser(): { user: string; password: string } {
  const skip: string | undefined = passwordUserSkipReason();
  if (skip !== undefined) throw new Error(skip);
  if (passwordCache !== undefined) return passwordCache;
  let created: boolean = false;
  if (!userExists(PASSWORD_USER)) {
    try {
      execFileSync('useradd', ['-m', '-s', '/bin/bash', PASSWORD_USER], { stdio: ['ignore', 'ignore', 'pipe'] });
      created = true;
    } catch (e) {
      if (!userExists(PASSWORD_USER)) throw e; // else: created concurrently by another process
    }
  }
  let password: string | undefined = created ? undefined : readPasswordFile();
  if (password === undefined) {
    password = 'pw-' + randomBytes(12).toString('base64url');
    rmSync(PASSWORD_FILE, { force: true });
    writeFileSync(PASSWORD_FILE, password + '\n', { mode: 0o600, flag: 'wx' });
    execFileSync('chpasswd', [], { input: `${PASSWORD_USER}:${password}\n`, stdio: ['pipe', 'ignore', 'pipe'] });
  }
  passwordCache = { user: PASSWORD_USER, password };
  return passwordCache;
}

// ---------------------------------------------------------------------------------------------

let versionCache: [number, number] | undefined;
function sshdVersion(): [number, number] {
  if (versionCache === undefined) {
    // `sshd -V` prints "OpenSSH_9.2, OpenSSL ..." on stderr and exits non-zero.
    let text: string = '';
    try {
      text = execFileSync(SSHD_BIN, ['-V'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    } catch (e) {
      text = String((e as { stderr?: string }).stderr ?? '');
    }
    const m: RegExpExecArray | null = /OpenSSH_(\d+)\.(\d+)/.exec(text);
    versionCache = m ? [Number(m[1]), Number(m[2])] : [0, 0];
  }
  return versionCache;
}

/** Pids of all descendants of `pid` (children first found, any depth), from /proc. */
function descendants(pid: number): number[] {
  const parent: Map<number, number> = new Map();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat: string = readFileSync(`/proc/${name}/stat`, 'utf8');
      // "pid (comm) state ppid ..." — comm may contain spaces/parens, so split after the last ')'.
      const ppid: number = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      parent.set(Number(name), ppid);
    } catch {
      // exited meanwhile
    }
  }
  const out: number[] = [];
  const queue: number[] = [pid];
  while (queue.length > 0) {
    const p: number = queue.shift()!;
    for (const [child, pp] of parent) {
      if (pp === p) {
        out.push(child);
        queue.push(child);
      }
    }
  }
  return out;
}

function killTree(pid: number | undefined): void {
  if (pid === undefined) return;
  for (const p of [pid, ...descendants(pid)]) {
    try {
      process.kill(p, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

function rmTmp(dir: string): void {
  rmSync(dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 50 });
}

// Last-resort cleanup if a test run exits without calling stop().
const live: Map<string, () => number | undefined> = new Map(); // tmp dir -> current sshd pid
let exitHookInstalled: boolean = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const [dir, pid] of live) {
      try {
        killTree(pid());
        rmTmp(dir);
      } catch {
        // best effort
      }
    }
    live.clear();
  });
}

function sshdConfig(dir: string, port: number, opts: StartSshdOptions): string {
  const [major, minor] = sshdVersion();
  const settings: Record<string, string | string[]> = {
    ListenAddress: `${HOST}:${port}`,
    HostKey: hostKeyFiles(dir, opts),
    PidFile: join(dir, 'sshd.pid'),
    AuthorizedKeysFile: join(dir, 'authorized_keys'),
    UsePAM: opts.pam ? 'yes' : 'no',
    PasswordAuthentication: 'yes',
    KbdInteractiveAuthentication: opts.pam ? 'yes' : 'no',
    PubkeyAuthentication: 'yes',
    PermitRootLogin: 'prohibit-password',
    StrictModes: 'no', // temp dirs and files are not owned by the login user
    LogLevel: 'VERBOSE',
    AcceptEnv: 'GIT_PROTOCOL LANG LC_*',
    Subsystem: 'sftp internal-sftp',
    AllowTcpForwarding: 'yes',
    AllowAgentForwarding: 'yes',
    X11Forwarding: 'no',
    PrintMotd: 'no',
    PrintLastLog: 'no',
    UseDNS: 'no',
    MaxStartups: '100',
    MaxSessions: '50',
    MaxAuthTries: '20',
    LoginGraceTime: '30',
    ...(major > 9 || (major === 9 && minor >= 8) ? { PerSourcePenalties: 'no' } : {}), // tests fail logins on purpose
    ...(opts.config ?? {}),
  };
  return '# written by test/support/sshd.ts\n' + Object.entries(settings).flatMap(([k, v]) => (Array.isArray(v) ? v : [v]).map((x) => `${k} ${x}\n`)).join('');
}

function hostKeyFiles(dir: string, opts: StartSshdOptions): string[] {
  const types: HostKeyType[] = opts.hostKeyTypes ?? ['ed25519'];
  if (types.length === 0 || new Set(types).size !== types.length) throw new Error(`hostKeyTypes: give each type once: ${types.join(', ')}`);
  return types.map((t) => join(dir, `host_${t}`));
}

export async function startSshd(opts: StartSshdOptions = {}): Promise<Sshd> {
  if (!existsSync(SSHD_BIN)) throw new Error(`${SSHD_BIN} not found: install openssh-server (.ci/run does)`);
  const isRoot: boolean = process.getuid?.() === 0;
  // As root sshd insists on its privilege separation directory (Debian creates it at boot only).
  if (isRoot) mkdirSync('/run/sshd', { recursive: true, mode: 0o755 });

  const dir: string = mkdtempSync(join(tmpdir(), 'gatehouse-sshd-'));
  chmodSync(dir, 0o755);
  const keyFiles: string[] = hostKeyFiles(dir, opts);
  const keyTypes: HostKeyType[] = opts.hostKeyTypes ?? ['ed25519'];
  const hostKeyFile: string = keyFiles[0]!;
  const logFile: string = join(dir, 'sshd.log');
  const authorizedKeys: string = join(dir, 'authorized_keys');
  const configFile: string = join(dir, 'sshd_config');

  let child: ChildProcess | undefined;
  let stopped: boolean = false;
  installExitHook();
  live.set(dir, () => (child !== undefined && child.exitCode === null && child.signalCode === null ? child.pid : undefined));

  const stopChild = async (): Promise<void> => {
    const c: ChildProcess | undefined = child;
    child = undefined;
    if (c === undefined || c.pid === undefined) return;
    if (c.exitCode !== null || c.signalCode !== null) return; // exited (and reaped): its pid may be reused
    const exited: Promise<void> = new Promise<void>((resolve) => c.once('exit', () => resolve()));
    killTree(c.pid);
    await exited;
  };

  // Spawns sshd and waits for "Server listening"; resolves false if the port was taken.
  const spawnSshd = async (port: number): Promise<boolean> => {
    writeFileSync(configFile, sshdConfig(dir, port, opts));
    const logStart: number = existsSync(logFile) ? statSync(logFile).size : 0;
    const fd: number = openSync(logFile, 'a');
    let c: ChildProcess;
    try {
      c = spawn(SSHD_BIN, ['-D', '-e', '-f', configFile], { stdio: ['ignore', fd, fd], cwd: dir });
    } finally {
      closeSync(fd);
    }
    child = c;
    let spawnError: Error | undefined;
    c.once('error', (e: Error) => { spawnError = e; });
    const deadline: number = Date.now() + 15_000;
    for (;;) {
      const log: string = readFileSync(logFile, 'utf8').slice(logStart);
      if (log.includes(`Server listening on ${HOST} port ${port}.`)) return true;
      if (spawnError !== undefined) throw spawnError;
      if (c.exitCode !== null || c.signalCode !== null) {
        child = undefined;
        if (/Address already in use|Cannot bind any address/.test(log)) return false;
        throw new Error(`sshd exited with ${c.exitCode ?? c.signalCode} before listening:\n${log}`);
      }
      if (Date.now() > deadline) throw new Error(`sshd did not start listening within 15 s:\n${log}`);
      await new Promise<void>((r) => setTimeout(r, 10));
    }
  };

  const newHostKeys = async (from?: string): Promise<void> => {
    const keys: SshdHostKey[] = [];
    for (const [i, file] of keyFiles.entries()) {
      rmSync(file, { force: true });
      rmSync(`${file}.pub`, { force: true });
      if (i === 0 && from !== undefined) {
        copyFileSync(from, file);
        chmodSync(file, 0o600);
        writeFileSync(`${file}.pub`, await keygen(['-y', '-f', file]));
      } else {
        await keygen(['-q', '-t', keyTypes[i]!, '-N', '', '-C', 'gatehouse-test-host', '-f', file]);
      }
      const pub: string[] = readFileSync(`${file}.pub`, 'utf8').trim().split(' ');
      keys.push({ type: pub[0]!, publicKey: `${pub[0]} ${pub[1]}`, fingerprint: await fingerprint(`${file}.pub`), file });
    }
    sshd.hostKeys = keys;
    sshd.hostKeyPublic = keys[0]!.publicKey;
    sshd.hostKeyFingerprint = keys[0]!.fingerprint;
  };

  const skip: string | undefined = passwordUserSkipReason();
  const sshd: Sshd = {
    host: HOST,
    port: 0,
    user: userInfo().username,
    hostKeyPublic: '',
    hostKeyFingerprint: '',
    hostKeyFile,
    hostKeys: [],
    clientKeyFile: join(dir, 'client_ed25519'),
    clientPublicKey: '',
    passwordLogin: undefined,
    passwordSkipReason: skip,
    dir,
    logFile,
    logs: (): string => (existsSync(logFile) ? readFileSync(logFile, 'utf8') : ''),
    authorizeKey(publicKey: string): void {
      appendFileSync(authorizedKeys, publicKey.trim() + '\n', { mode: 0o644 });
    },
    knownHostsLine: (): string => `[${HOST}]:${sshd.port} ${sshd.hostKeyPublic}`,
    async restartWithNewHostKey(): Promise<void> {
      if (stopped) throw new Error('sshd was stopped');
      await stopChild();
      await newHostKeys();
      if (!(await spawnSshd(sshd.port))) throw new Error(`sshd could not bind ${HOST}:${sshd.port} again`);
    },
    async stop(): Promise<void> {
      if (stopped) return;
      stopped = true;
      try {
        await stopChild();
      } finally {
        rmTmp(dir);
        live.delete(dir);
      }
    },
  };

  try {
    await newHostKeys(opts.hostKeyFile);
    const key: ClientKey = await generateClientKey(dir, 'ed25519', 'client_ed25519');
    sshd.clientPublicKey = key.publicKey;
    sshd.authorizeKey(key.publicKey);
    if (skip === undefined) sshd.passwordLogin = ensurePasswordUser();

    // freePort() can race with other processes; retry with a new port if sshd can't bind.
    for (let attempt: number = 1; ; attempt++) {
      const port: number = await freePort();
      if (await spawnSshd(port)) {
        sshd.port = port;
        break;
      }
      if (attempt >= START_ATTEMPTS) throw new Error(`sshd could not bind a free port:\n${sshd.logs()}`);
    }
  } catch (e) {
    await sshd.stop().catch(() => {});
    throw e;
  }
  return sshd;
}
