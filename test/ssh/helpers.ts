// Shared set-up for the SSH engine tests: one gateway and one throwaway OpenSSH target per test
// file, an identity ("alice") that signs in with its own key, a connection ("box") to the target
// logged in as the target's test user, recordings read back through the API, and a raw-byte ssh
// runner (runSsh in ../support decodes output as UTF-8, which would spoil binary output).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startTestGateway, type TestGateway } from '../support/gateway.ts';
import { generateClientKey, startSshd, type ClientKey, type Sshd, type StartSshdOptions } from '../support/sshd.ts';
import { sshArgs, type SshOptions } from '../support/ssh-client.ts';

export { api, describeEvents, eventsOf, newRecordings, oneEvent, recordOne, sessionIds, waitForRecording, type Data, type Recording } from '../support/recordings.ts';

export interface SshWorld {
  gw: TestGateway;
  sshd: Sshd;
  /** Scratch directory of the test file (removed by stop()). */
  work: string;
  /** alice's key, registered with `gatehouse key add`. */
  key: ClientKey;
  identity: string;
  /** The granted connection to the target. */
  connection: string;
  /** ssh options for alice through the gateway to `connection` (or another connection name). */
  opts(extra?: Partial<SshOptions> & { connection?: string }): SshOptions;
  /** ssh options straight to the target (no gateway), for comparisons. */
  direct(extra?: Partial<SshOptions>): SshOptions;
  /** `gatehouse connection add NAME --type ssh` to the target with the pinned host key, plus `args`; grants alice unless grant=false. */
  addConnection(name: string, args?: string[], grant?: boolean): Promise<void>;
  stop(): Promise<void>;
}

export async function startSshWorld(o: { sshd?: StartSshdOptions; connectionArgs?: string[]; gatewayArgs?: string[] } = {}): Promise<SshWorld> {
  const gw = await startTestGateway({ args: o.gatewayArgs ?? [] });
  let sshd: Sshd | undefined;
  let work = '';
  try {
    sshd = await startSshd(o.sshd);
    work = mkdtempSync(join(tmpdir(), 'gatehouse-ssh-test-'));
    const key = await generateClientKey(work, 'ed25519', 'alice_ed25519');
    await gw.cliOk(['identity', 'add', 'alice', '--kind', 'human']);
    await gw.cliOk(['key', 'add', 'alice', `${key.privateKeyFile}.pub`]);
    const s = sshd;
    const world: SshWorld = {
      gw, sshd: s, work, key, identity: 'alice', connection: 'box',
      opts: (extra = {}) => {
        const { connection, ...rest } = extra;
        return { port: gw.sshPort, user: connection ?? 'box', identityFile: key.privateKeyFile, ...rest };
      },
      direct: (extra = {}) => ({ port: s.port, user: s.user, identityFile: s.clientKeyFile, ...extra }),
      async addConnection(name, args = [], grant = true) {
        await gw.cliOk(['connection', 'add', name, '--type', 'ssh', '--host', s.host, '--port', String(s.port), '--user', s.user,
          '--key-file', s.clientKeyFile, '--host-key', s.hostKeyPublic, ...args]);
        if (grant) await gw.cliOk(['grant', 'alice', name]);
      },
      async stop() {
        await gw.stop();
        await s.stop();
        rmSync(work, { recursive: true, force: true });
      },
    };
    await world.addConnection('box', o.connectionArgs ?? []);
    return world;
  } catch (err) {
    await gw.stop();
    await sshd?.stop();
    if (work) rmSync(work, { recursive: true, force: true });
    throw err;
  }
}


// ── Raw ssh ─────────────────────────────────────────────────────────────────────────────────

export interface RawResult { code: number | null; signal: NodeJS.Signals | null; stdout: Buffer; stderr: string }

/** Environment for OpenSSH clients: no agent, no askpass from the caller's environment. */
export function clientEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env.SSH_AUTH_SOCK;
  delete env.SSH_ASKPASS;
  delete env.SSH_ASKPASS_REQUIRE;
  return { ...env, ...extra };
}

/** `ssh OPTS user@127.0.0.1 -- command` (no command: a shell) with stdin from `input`, stdout kept as bytes. */
export function runSshRaw(opts: SshOptions, command: string | undefined, input?: Buffer | string, timeoutMs = 60_000): Promise<RawResult> {
  return new Promise((resolve, reject) => {
    const child = spawn('ssh', [...sshArgs(opts), `${opts.user}@127.0.0.1`, ...(command !== undefined ? ['--', command] : [])], { env: clientEnv(opts.env), stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let err = '';
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => { err += c.toString(); });
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`ssh ${command} timed out; stderr: ${err}`)); }, timeoutMs);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout: Buffer.concat(out), stderr: err });
    });
    child.stdin.on('error', () => {});
    child.stdin.end(input ?? '');
  });
}

export function sha256(data: Buffer | string): string {
  return createHash('sha256').update(data).digest('hex');
}

export async function sha256File(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(file)) h.update(chunk as Buffer);
  return h.digest('hex');
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export function ok<T extends { code: number | null; stderr: string }>(r: T, what: string): T {
  assert.equal(r.code, 0, `${what} failed (code ${r.code}): ${r.stderr}`);
  return r;
}

export interface BackgroundSsh {
  child: import('node:child_process').ChildProcess;
  stdout(): string;
  stderr(): string;
  /** Resolves with the exit code (null when killed by a signal). */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Waits until stdout contains `text`. */
  waitForStdout(text: string, timeoutMs?: number): Promise<void>;
  stop(): Promise<void>;
}

/** Starts `ssh OPTS user@127.0.0.1 [-- command]` in the background (stdin kept open). */
export function startSsh(opts: SshOptions, command?: string): BackgroundSsh {
  const child = spawn('ssh', [...sshArgs(opts), `${opts.user}@127.0.0.1`, ...(command !== undefined ? ['--', command] : [])], {
    env: clientEnv(opts.env), stdio: ['pipe', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout!.on('data', (c: Buffer) => { out += c.toString(); });
  child.stderr!.on('data', (c: Buffer) => { err += c.toString(); });
  child.stdin!.on('error', () => {});
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.on('close', (code, signal) => resolve({ code, signal }));
  });
  return {
    child, exited,
    stdout: () => out,
    stderr: () => err,
    async waitForStdout(text, timeoutMs = 15_000) {
      const deadline = Date.now() + timeoutMs;
      while (!out.includes(text)) {
        if (child.exitCode !== null || child.signalCode !== null) throw new Error(`ssh exited before printing ${text}: ${err}`);
        if (Date.now() > deadline) throw new Error(`ssh did not print ${text} in time; stderr: ${err}`);
        await sleep(20);
      }
    },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const t = setTimeout(() => child.kill('SIGKILL'), 5000);
        await exited;
        clearTimeout(t);
      }
    },
  };
}
