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
import type { EventView, SessionView } from '../../src/cli/format.ts';

export type Data = Record<string, unknown>;
export interface Recording { session: SessionView; events: EventView[] }

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

export async function startSshWorld(o: { sshd?: StartSshdOptions; connectionArgs?: string[] } = {}): Promise<SshWorld> {
  const gw = await startTestGateway();
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

// ── Recordings through the API ──────────────────────────────────────────────────────────────

export async function api<T>(gw: TestGateway, p: string): Promise<T> {
  const res = await fetch(`${gw.url}${p}`, { headers: { authorization: `Bearer ${gw.adminToken}` } });
  const text = await res.text();
  assert.equal(res.status, 200, `GET ${p}: ${res.status} ${text}`);
  return JSON.parse(text) as T;
}

export async function sessionIds(gw: TestGateway): Promise<Set<string>> {
  return new Set((await api<SessionView[]>(gw, '/api/v1/sessions?limit=10000')).map((s) => s.id));
}

/** Sessions started since `beforeIds` (oldest first), once at least `expected` exist and all have ended. */
export async function newRecordings(gw: TestGateway, beforeIds: Set<string>, expected: number, timeoutMs = 15_000): Promise<Recording[]> {
  const deadline = Date.now() + timeoutMs;
  let fresh: SessionView[] = [];
  for (;;) {
    fresh = (await api<SessionView[]>(gw, '/api/v1/sessions?limit=10000')).filter((s) => !beforeIds.has(s.id));
    if ((fresh.length >= expected && fresh.every((s) => s.endedAt !== null)) || Date.now() > deadline) break;
    await sleep(100);
  }
  fresh.sort((a, b) => (a.id < b.id ? -1 : 1));
  const out: Recording[] = [];
  for (const s of fresh) out.push(await api<Recording>(gw, `/api/v1/sessions/${s.id}`));
  return out;
}

/** Runs `fn` and returns the one session it recorded (ended). */
export async function recordOne<T>(gw: TestGateway, fn: () => Promise<T>): Promise<{ rec: Recording; result: T }> {
  const beforeIds = await sessionIds(gw);
  const result = await fn();
  const recs = await newRecordings(gw, beforeIds, 1);
  assert.equal(recs.length, 1, `exactly one session recorded, got ${recs.length}: ${recs.map((r) => r.session.endReason).join('; ')}`);
  assert.notEqual(recs[0]!.session.endedAt, null, 'the session has ended in the recording');
  return { rec: recs[0]!, result };
}

/** Polls the open session(s) started since `beforeIds` until `pred` holds for one of them. */
export async function waitForRecording(gw: TestGateway, beforeIds: Set<string>, pred: (r: Recording) => boolean, timeoutMs = 15_000): Promise<Recording> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const fresh = (await api<SessionView[]>(gw, '/api/v1/sessions?limit=10000')).filter((s) => !beforeIds.has(s.id));
    for (const s of fresh) {
      const r = await api<Recording>(gw, `/api/v1/sessions/${s.id}`);
      if (pred(r)) return r;
    }
    if (Date.now() > deadline) throw new Error('the expected recording did not appear in time');
    await sleep(100);
  }
}

export function eventsOf(rec: Recording, type: string): Array<EventView & { data: Data }> {
  return rec.events.filter((e) => e.type === type) as Array<EventView & { data: Data }>;
}

export function oneEvent(rec: Recording, type: string, pred: (d: Data) => boolean = () => true): Data {
  const found = eventsOf(rec, type).filter((e) => pred(e.data));
  assert.equal(found.length, 1, `exactly one ${type} event expected, got ${found.length}; events: ${describeEvents(rec)}`);
  return found[0]!.data;
}

export function describeEvents(rec: Recording): string {
  return rec.events.map((e) => `${e.seq}:${e.type}${e.type.startsWith('term.') ? '' : ' ' + JSON.stringify(e.data).slice(0, 300)}`).join('\n');
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

/** `ssh OPTS user@127.0.0.1 -- command` with stdin from `input`, stdout kept as bytes. */
export function runSshRaw(opts: SshOptions, command: string, input?: Buffer | string, timeoutMs = 60_000): Promise<RawResult> {
  return new Promise((resolve, reject) => {
    const child = spawn('ssh', [...sshArgs(opts), `${opts.user}@127.0.0.1`, '--', command], { env: clientEnv(opts.env), stdio: ['pipe', 'pipe', 'pipe'] });
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
