// Runs the OpenSSH clients (ssh, scp, sftp) non-interactively against a test server.
//
// Every invocation uses `-F /dev/null` (no ~/.ssh/config, no /etc/ssh/ssh_config), no agent, no
// default known_hosts: what a test does not pass explicitly does not happen. Passwords and tokens
// are supplied through SSH_ASKPASS with SSH_ASKPASS_REQUIRE=force (OpenSSH never reads them from
// stdin), which answers both `password` and `keyboard-interactive` prompts.
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { dirname, join } from 'node:path';
import { run } from './processes.ts';
import type { RunResult } from './processes.ts';

export interface SshOptions {
  host?: string; // default 127.0.0.1
  port?: number; // default 22
  user?: string; // default: the current OS user
  identityFile?: string;
  /** Check the host key against this file. Without it, host keys are not checked at all. */
  knownHostsFile?: string;
  /** Default: 'yes' with knownHostsFile, else 'no'. */
  strictHostKeyChecking?: 'yes' | 'no' | 'accept-new';
  /**
   * Log in with this password / token via SSH_ASKPASS (see withAskpass): disables BatchMode and
   * public keys, and prefers password,keyboard-interactive.
   */
  password?: string;
  /** Default: publickey, or password,keyboard-interactive with `password`. */
  preferredAuthentications?: string;
  /** ssh's LogLevel; default ERROR (hides "Permanently added ..." noise, keeps host key errors). */
  logLevel?: string;
  /** More client arguments placed before the destination, e.g. ['-o', 'SendEnv=LANG'] or ['-L', '...']. */
  extra?: string[];
  /** Extra environment for the client process. */
  env?: NodeJS.ProcessEnv;
  /** Kill the client after this many ms (default 30 s). */
  timeoutMs?: number;
}

/** { code, signal, stdout, stderr } */
export type SshResult = RunResult;

const DEFAULT_TIMEOUT_MS: number = 30_000;

/** POSIX shell quoting of one word. */
export function shellQuote(word: string): string {
  return /^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;
}

/** The `-o` options shared by ssh, scp and sftp (no port, no destination). */
export function sshOptions(opts: Omit<SshOptions, 'port'> = {}): string[] {
  const o: string[] = ['-F', '/dev/null'];
  const set = (k: string, v: string): void => {
    o.push('-o', `${k}=${v}`);
  };
  set('StrictHostKeyChecking', opts.strictHostKeyChecking ?? (opts.knownHostsFile ? 'yes' : 'no'));
  set('UserKnownHostsFile', opts.knownHostsFile ?? '/dev/null');
  set('GlobalKnownHostsFile', '/dev/null');
  set('IdentityAgent', 'none');
  set('IdentitiesOnly', 'yes');
  if (opts.identityFile !== undefined) set('IdentityFile', opts.identityFile);
  if (opts.password !== undefined) {
    set('BatchMode', 'no'); // BatchMode=yes would skip password prompts (askpass included)
    set('PubkeyAuthentication', 'no');
    set('NumberOfPasswordPrompts', '1');
    set('PreferredAuthentications', opts.preferredAuthentications ?? 'password,keyboard-interactive');
  } else {
    set('BatchMode', 'yes');
    set('PreferredAuthentications', opts.preferredAuthentications ?? 'publickey');
  }
  set('ConnectTimeout', '10');
  set('LogLevel', opts.logLevel ?? 'ERROR');
  return [...o, ...(opts.extra ?? [])];
}

/** ssh arguments up to (not including) the destination: `-p PORT -F /dev/null -o ...`. */
export function sshArgs(opts: SshOptions = {}): string[] {
  return ['-p', String(opts.port ?? 22), ...sshOptions(opts)];
}

function destination(opts: SshOptions): string {
  return `${opts.user ?? userInfo().username}@${opts.host ?? '127.0.0.1'}`;
}

function clientEnv(opts: SshOptions): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env.SSH_AUTH_SOCK;
  delete env.SSH_ASKPASS;
  delete env.SSH_ASKPASS_REQUIRE;
  const askpass: boolean = opts.password !== undefined && opts.env?.SSH_ASKPASS === undefined;
  return { ...env, ...(askpass ? withAskpass(opts.password!) : {}), ...opts.env };
}

/**
 * Runs `ssh ... user@host [command]`. A string command is passed as is (the remote shell parses
 * it); an array is shell-quoted word by word. `input` is written to ssh's stdin.
 */
export function runSsh(opts: SshOptions, command?: string | string[], input?: string): Promise<SshResult> {
  const cmd: string[] = command === undefined ? [] : ['--', typeof command === 'string' ? command : command.map(shellQuote).join(' ')];
  return run('ssh', [...sshArgs(opts), destination(opts), ...cmd], {
    env: clientEnv(opts),
    input,
    timeoutMs: opts.timeoutMs ?? DEFAULT_TIMEOUT_MS,
  });
}

/**
 * Runs `scp -P PORT ... args`; remote paths are written `remote:PATH` and get `user@host`
 * substituted, e.g. runScp(o, ['local.txt', 'remote:/tmp/x']). Uses the SFTP protocol (scp's default).
 */
export function runScp(opts: SshOptions, args: string[]): Promise<SshResult> {
  const dest: string = destination(opts);
  const mapped: string[] = args.map((a) => (a.startsWith('remote:') ? `${dest}:${a.slice('remote:'.length)}` : a));
  return run('scp', ['-q', '-P', String(opts.port ?? 22), ...sshOptions(opts), ...mapped], {
    env: clientEnv(opts),
    timeoutMs: opts.timeoutMs ?? DEFAULT_TIMEOUT_MS,
  });
}

/** Runs `sftp -b <batch file>` with `commands` (one per line); a failing command makes sftp exit 1. */
export async function runSftp(opts: SshOptions, commands: string[]): Promise<SshResult> {
  const dir: string = mkdtempSync(join(tmpdir(), 'gatehouse-sftp-'));
  try {
    const batch: string = join(dir, 'batch');
    writeFileSync(batch, commands.join('\n') + '\n');
    return await run('sftp', ['-b', batch, '-P', String(opts.port ?? 22), ...sshOptions(opts), destination(opts)], {
      env: clientEnv(opts),
      timeoutMs: opts.timeoutMs ?? DEFAULT_TIMEOUT_MS,
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * A GIT_SSH_COMMAND value: `ssh -F /dev/null -o ...` shell-quoted. Leave the port to the URL
 * (ssh://user@127.0.0.1:PORT/path, see sshUrl): git passes `-p PORT` itself. Git recognises the
 * command as OpenSSH, so protocol v2 is requested with `-o SendEnv=GIT_PROTOCOL`. With `password`
 * the options allow password logins, but the askpass environment is up to you: use gitSshEnv().
 */
export function gitSshCommand(opts: Omit<SshOptions, 'port'> = {}): string {
  return ['ssh', ...sshOptions(opts)].map(shellQuote).join(' ');
}

/** Environment for git over SSH: GIT_SSH_COMMAND, plus the askpass variables when `password` is given. */
export function gitSshEnv(opts: Omit<SshOptions, 'port'> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { GIT_SSH_COMMAND: gitSshCommand(opts) };
  return opts.password !== undefined ? { ...env, ...withAskpass(opts.password) } : env;
}

/** ssh://user@host:port/absolute/path */
export function sshUrl(target: { host?: string; port: number; user?: string }, path: string): string {
  return `ssh://${target.user ?? userInfo().username}@${target.host ?? '127.0.0.1'}:${target.port}${path.startsWith('/') ? '' : '/'}${path}`;
}

/** known_hosts line for a server on a non-standard port. */
export function knownHostsEntry(host: string, port: number, publicKey: string): string {
  return `${port === 22 ? host : `[${host}]:${port}`} ${publicKey.trim()}`;
}

// ---------------------------------------------------------------------------------------------
// Askpass: one tiny script per secret, in temp dirs removed when the process exits.

const askpassDirs: Set<string> = new Set();
let askpassHookInstalled: boolean = false;

/**
 * Environment that makes ssh/scp/sftp/git answer every password or keyboard-interactive prompt
 * with `secret`: SSH_ASKPASS=<generated script>, SSH_ASKPASS_REQUIRE=force (DISPLAY not needed).
 * The script also appends each prompt it was asked to a log, see askpassPrompts().
 */
export function withAskpass(secret: string): { SSH_ASKPASS: string; SSH_ASKPASS_REQUIRE: 'force' } {
  if (!askpassHookInstalled) {
    askpassHookInstalled = true;
    process.on('exit', () => {
      for (const d of askpassDirs) rmSync(d, { recursive: true, force: true });
    });
  }
  const dir: string = mkdtempSync(join(tmpdir(), 'gatehouse-askpass-'));
  askpassDirs.add(dir);
  writeFileSync(join(dir, 'secret'), secret, { mode: 0o600 });
  const script: string = join(dir, 'askpass');
  writeFileSync(
    script,
    `#!/bin/sh\nprintf '%s\\n' "$1" >> ${shellQuote(join(dir, 'prompts'))}\ncat ${shellQuote(join(dir, 'secret'))}\necho\n`,
  );
  chmodSync(script, 0o700);
  return { SSH_ASKPASS: script, SSH_ASKPASS_REQUIRE: 'force' };
}

/** Prompts the askpass script of `env` (from withAskpass) has answered so far, one per line. */
export function askpassPrompts(env: { SSH_ASKPASS?: string }): string[] {
  if (env.SSH_ASKPASS === undefined) return [];
  try {
    return readFileSync(join(dirname(env.SSH_ASKPASS), 'prompts'), 'utf8').split('\n').filter((l) => l !== '');
  } catch {
    return [];
  }
}
