// `npm run bench:ssh`: SSH stream throughput and keystroke echo latency, directly to a throwaway
// OpenSSH server, through OpenSSH ProxyJump via a second throwaway sshd, and through the gateway,
// all in one run. Prints MB/s per path and direction with the ratios gateway/direct and
// gateway/ProxyJump, the echo round trip of a keystroke and what each hop adds, the cipher each
// hop negotiated, a verdict on the issue's targets (at least ProxyJump's throughput, under 1 ms
// added per keystroke), and writes everything to bench/results/ssh-latest.json.
//
//   npm run bench:ssh -- [--size 1G] [--runs 3] [--keystrokes 200] [--cipher NAME]
//
//   --size        bytes streamed per run, with K, M or G (binary: 1G = 2^30 bytes, as head -c reads it)
//   --runs        runs per path and direction; the table shows the median (default 3)
//   --keystrokes  echo round trips measured per path (default 200, after 20 unmeasured)
//   --cipher      pin the OpenSSH client's cipher (every hop it makes, the jump included), e.g.
//                 aes128-gcm@openssh.com; default: normal negotiation, what users get
//
// Environment:
//   BENCH_CPU_PROF  a directory: run the gateway under `node --cpu-prof` and write its
//                   .cpuprofile there when it stops (open in Chrome DevTools or speedscope)
//
// Every path uses the same client key and the same target sshd; the ProxyJump path goes through
// a second sshd on loopback. ssh runs with its own config file (-F: no ~/.ssh/config, no agent,
// no host key checks); -F is the one option ssh hands on to the jump's `ssh -W`. Everything runs
// on free loopback ports and is stopped by this script, also on failure or Ctrl-C.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { cpus, loadavg, tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { startTestGateway, type TestGateway } from '../test/support/gateway.ts';
import { SSHD_BIN, generateClientKey, startSshd, type ClientKey, type Sshd } from '../test/support/sshd.ts';
import { shellQuote } from '../test/support/ssh-client.ts';
import { cleanupAll, errorMessage, firstLine, fmt, interrupted, lastLines, log, onCleanup } from './support.ts';
import { run, type RunResult } from '../test/support/processes.ts';

const BENCH_DIR: string = path.dirname(fileURLToPath(import.meta.url));
const REPO_ROOT: string = path.resolve(BENCH_DIR, '..');
const RESULTS_FILE: string = path.join(BENCH_DIR, 'results', 'ssh-latest.json');

const HOST: string = '127.0.0.1';
const GATEWAY_IDENTITY: string = 'bench';
/** Durable recording (the default): typed input is on record before it reaches the target. */
const GATEWAY_CONNECTION: string = 'bench';
/** The same target with --recording best-effort, to tell recording apart from relaying in the keystroke figures. */
const GATEWAY_CONNECTION_BEST_EFFORT: string = 'bench-best-effort';
const KEYSTROKE_WARMUP: number = 20;
/** Pause after each echo, so keystrokes arrive one at a time as typed ones do, not back to back. */
const KEYSTROKE_PAUSE_MS: number = 20;
const CONNECT_PROBES: number = 5;
const CPU_PROF_DIR: string | undefined = process.env.BENCH_CPU_PROF ? path.resolve(process.env.BENCH_CPU_PROF) : undefined;

type PathName = 'direct' | 'proxyjump' | 'gateway';
type RoutePathName = PathName | 'gateway best-effort';
/** Echo rows: one per route, plus the Enter key measured on the direct and gateway routes. */
type EchoPathName = RoutePathName | 'direct Enter' | 'gateway Enter';
type Direction = 'upload' | 'download';

const PATHS: readonly PathName[] = ['direct', 'proxyjump', 'gateway'];
const ECHO_PATHS: readonly RoutePathName[] = ['direct', 'proxyjump', 'gateway', 'gateway best-effort'];
const DIRECTIONS: readonly Direction[] = ['upload', 'download'];

const DIRECTION_LABEL: Record<Direction, string> = {
  upload: 'client→target',
  download: 'target→client',
};

interface Settings {
  bytes: number;
  sizeLabel: string;
  runs: number;
  keystrokes: number;
  cipher: string | null;
}

interface ThroughputRun {
  seconds: number | null;
  mbPerSecond: number | null;
  /** Gateway user + system CPU seconds during the run (gateway path only). */
  gatewayCpuSeconds: number | null;
  /** Share of all the machine's CPU time that was busy during the run (/proc/stat), 0..1. */
  hostBusy: number | null;
  error: string | null;
}

interface ThroughputRow {
  path: PathName;
  direction: Direction;
  command: string;
  runs: ThroughputRun[];
  medianMbPerSecond: number | null;
  ratioToDirect: number | null;
  ratioToProxyJump: number | null;
  medianGatewayCpuSeconds: number | null;
}

interface EchoRow {
  path: EchoPathName;
  samples: number;
  medianMs: number | null;
  p95Ms: number | null;
  meanMs: number | null;
  addedMedianMs: number | null;
  addedP95Ms: number | null;
  error: string | null;
}

interface Hop {
  hop: string;
  cipher: string | null;
  source: string;
}

interface PathInfo {
  path: PathName;
  connectMs: number | null;
  connectRunsMs: number[];
  hops: Hop[];
  error: string | null;
}

interface MachineNotes {
  loadBefore: number[];
  loadAfter: number[];
  ssh2Native: { available: boolean; reason: string | null };
}

interface Verdict {
  target: string;
  compared: string;
  gateway: number | null;
  reference: number | null;
  ratio: number | null;
  met: boolean | null;
  unit: string;
}

/** How to reach the target over one path: ssh arguments before the remote command. */
interface Route {
  name: EchoPathName;
  args: string[];
}

// ---- cleanup ------------------------------------------------------------------------------------

/** ssh clients (and their shells) still running, each the leader of its own process group; killed by the cleanup. */
const liveChildren: Set<ChildProcess> = new Set();

function track(child: ChildProcess): ChildProcess {
  liveChildren.add(child);
  child.once('exit', () => liveChildren.delete(child));
  return child;
}

/** SIGKILLs a child spawned with `detached: true` and everything in its process group (the shell's head and ssh, a jump's `ssh -W`). */
function killGroup(child: ChildProcess, signal: NodeJS.Signals = 'SIGKILL'): void {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    // gone
  }
}

// ---- small helpers ------------------------------------------------------------------------------

const sleep = (ms: number): Promise<void> => new Promise<void>((r) => setTimeout(r, ms));

function parseSize(raw: string): number {
  const m: RegExpExecArray | null = /^(\d+(?:\.\d+)?)([KMG]?)i?B?$/i.exec(raw.trim());
  if (!m) throw new Error(`--size: expected a size such as 1G, 256M or 1048576, got "${raw}"`);
  const unit: number = { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3 }[m[2].toUpperCase()] ?? 1;
  const bytes: number = Math.round(Number(m[1]) * unit);
  if (!(bytes > 0)) throw new Error(`--size must be positive, got "${raw}"`);
  return bytes;
}

function sizeLabel(bytes: number): string {
  for (const [unit, n] of [['GiB', 1024 ** 3], ['MiB', 1024 ** 2], ['KiB', 1024]] as const) {
    if (bytes >= n && bytes % n === 0) return `${bytes / n} ${unit}`;
  }
  return `${bytes} bytes`;
}

function positiveInt(raw: string, name: string): number {
  const n: number = Number(raw);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${name} must be a positive integer, got "${raw}"`);
  return n;
}

function parseSettings(): Settings {
  const { values } = parseArgs({
    options: {
      size: { type: 'string', default: '1G' },
      runs: { type: 'string', default: '3' },
      keystrokes: { type: 'string', default: '200' },
      cipher: { type: 'string' },
    },
    allowPositionals: false,
  });
  const bytes: number = parseSize(values.size);
  return {
    bytes,
    sizeLabel: sizeLabel(bytes),
    runs: positiveInt(values.runs, '--runs'),
    keystrokes: positiveInt(values.keystrokes, '--keystrokes'),
    cipher: values.cipher ?? null,
  };
}

function median(xs: number[]): number | null {
  if (xs.length === 0) return null;
  const s: number[] = [...xs].sort((a, b) => a - b);
  const mid: number = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

/** Nearest-rank percentile. */
function percentile(xs: number[], p: number): number | null {
  if (xs.length === 0) return null;
  const s: number[] = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
}

function mean(xs: number[]): number | null {
  return xs.length === 0 ? null : xs.reduce((a, b) => a + b, 0) / xs.length;
}

function ratio(a: number | null, b: number | null): number | null {
  return a !== null && b !== null && b > 0 ? a / b : null;
}

function fmtRatio(r: number | null): string {
  return r === null ? '-' : `${r.toFixed(2)}x`;
}

function signed(n: number | null, digits: number): string {
  return n === null ? '-' : `${n >= 0 ? '+' : ''}${n.toFixed(digits)}`;
}

/** Environment for the OpenSSH clients: no agent, no askpass, nothing from ~/.ssh (-F). */
function clientEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const k of ['SSH_AUTH_SOCK', 'SSH_ASKPASS', 'SSH_ASKPASS_REQUIRE', 'DISPLAY']) delete env[k];
  return { ...env, LC_ALL: 'C' };
}

/**
 * Whether ssh2's native crypto addon loads under this Node (the one the gateway runs on). Without
 * it ssh2 falls back to node:crypto objects created per packet (and WebAssembly Poly1305), at
 * nearly twice the gateway CPU per byte; an addon built by `npm install` under another Node
 * major does not load.
 */
function ssh2NativeCrypto(): { available: boolean; reason: string | null } {
  const req: NodeJS.Require = createRequire(path.join(REPO_ROOT, 'package.json'));
  try {
    const crypto = req('ssh2/lib/protocol/crypto.js') as { bindingAvailable?: boolean };
    if (crypto.bindingAvailable === true) return { available: true, reason: null };
    req('ssh2/lib/protocol/crypto/build/Release/sshcrypto.node');
    return { available: false, reason: 'ssh2 reports it unavailable' };
  } catch (err) {
    return { available: false, reason: errorMessage(err).split('\n').slice(0, 4).join(' ').replace(/\s+/g, ' ') };
  }
}

// ---- CPU accounting (Linux /proc) ---------------------------------------------------------------

let clockTicks: number = 100;

async function readClockTicks(): Promise<void> {
  const r: RunResult = await run('getconf', ['CLK_TCK'], { timeoutMs: 5_000 }).catch(() => ({ code: 1, signal: null, stdout: '', stderr: '' }));
  const n: number = Number(r.stdout.trim());
  if (r.code === 0 && Number.isInteger(n) && n > 0) clockTicks = n;
}

/** User + system CPU seconds of a process (all its threads) so far. */
function processCpuSeconds(pid: number): number {
  const stat: string = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields: string[] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / clockTicks; // utime, stime (fields 14 and 15 of the line)
}

/** Machine-wide busy and total jiffies, from the first line of /proc/stat. */
function hostCpu(): { busy: number; total: number } {
  const cols: number[] = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal (guest time is already counted in user)
  const total: number = cols.slice(0, 8).reduce((a, b) => a + b, 0);
  const idle: number = cols[3] + cols[4];
  return { busy: total - idle, total };
}

// ---- setup ----------------------------------------------------------------------------------------

/** An ssh_config used with -F by every client (and handed on by ssh to the jump's `ssh -W`). */
function writeClientConfig(dir: string, key: ClientKey, cipher: string | null): string {
  const file: string = path.join(dir, 'ssh_config');
  writeFileSync(file, [
    '# written by bench/ssh.ts',
    'Host *',
    `  IdentityFile ${key.privateKeyFile}`,
    '  IdentitiesOnly yes',
    '  IdentityAgent none',
    '  BatchMode yes',
    '  PreferredAuthentications publickey',
    '  StrictHostKeyChecking no',
    '  UserKnownHostsFile /dev/null',
    '  GlobalKnownHostsFile /dev/null',
    '  UpdateHostKeys no',
    '  ControlMaster no',
    '  ControlPath none',
    '  ConnectTimeout 10',
    '  LogLevel ERROR',
    ...(cipher !== null ? [`  Ciphers ${cipher}`] : []),
    '',
  ].join('\n'));
  return file;
}

async function setupGateway(gw: TestGateway, target: Sshd, key: ClientKey): Promise<void> {
  await gw.cliOk(['identity', 'add', GATEWAY_IDENTITY, '--kind', 'human']);
  await gw.cliOk(['key', 'add', GATEWAY_IDENTITY, `${key.privateKeyFile}.pub`]);
  for (const [name, recording] of [[GATEWAY_CONNECTION, 'durable'], [GATEWAY_CONNECTION_BEST_EFFORT, 'best-effort']] as const) {
    await gw.cliOk(['connection', 'add', name, '--type', 'ssh', '--host', target.host, '--port', String(target.port), '--user', target.user,
      '--key-file', key.privateKeyFile, '--host-key-fingerprint', target.hostKeyFingerprint, '--recording', recording]);
    await gw.cliOk(['grant', GATEWAY_IDENTITY, name]);
  }
}

// ---- ssh runs -------------------------------------------------------------------------------------

interface SpawnResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stderr: string;
  seconds: number;
}

/** Spawns `cmd`, times it from spawn to exit with process.hrtime, and keeps its stderr (stdout goes to /dev/null). */
function timed(cmd: string, args: string[], timeoutMs: number): Promise<SpawnResult> {
  return new Promise<SpawnResult>((resolve, reject) => {
    const t0: bigint = process.hrtime.bigint();
    const child: ChildProcess = track(spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'], env: clientEnv(), detached: true }));
    let stderr: string = '';
    child.stderr!.on('data', (d: Buffer) => { stderr += d.toString(); });
    const timer: NodeJS.Timeout = setTimeout(() => {
      killGroup(child);
      reject(new Error(`${cmd} ${args.join(' ')} timed out after ${timeoutMs} ms; stderr: ${lastLines(stderr, 5)}`));
    }, timeoutMs);
    child.once('error', (err: Error) => { clearTimeout(timer); reject(err); });
    child.once('close', (code: number | null, signal: NodeJS.Signals | null) => {
      clearTimeout(timer);
      resolve({ code, signal, stderr, seconds: Number(process.hrtime.bigint() - t0) / 1e9 });
    });
  });
}

/** The shell pipeline (or argv) that streams `bytes` one way over a route. */
function streamCommand(route: Route, direction: Direction, bytes: number): { cmd: string; args: string[]; display: string } {
  if (direction === 'upload') {
    const line: string = `head -c ${bytes} /dev/zero | ssh ${route.args.map(shellQuote).join(' ')} ${shellQuote('cat > /dev/null')}`;
    return { cmd: 'sh', args: ['-c', line], display: line };
  }
  const args: string[] = [...route.args, `head -c ${bytes} /dev/zero`];
  return { cmd: 'ssh', args, display: `ssh ${args.map(shellQuote).join(' ')} > /dev/null` };
}

async function throughputRun(route: Route, direction: Direction, s: Settings, gw: TestGateway, seen: Set<string>): Promise<ThroughputRun> {
  const { cmd, args } = streamCommand(route, direction, s.bytes);
  // Generous: 1 MB/s would be a failure anyway.
  const timeoutMs: number = Math.max(120_000, (s.bytes / 1e6) * 1000);
  const gwPid: number | undefined = route.name === 'gateway' ? gw.process.pid : undefined;
  const cpuBefore: number | null = gwPid !== undefined ? processCpuSeconds(gwPid) : null;
  const hostBefore = hostCpu();
  const out: ThroughputRun = { seconds: null, mbPerSecond: null, gatewayCpuSeconds: null, hostBusy: null, error: null };
  try {
    const r: SpawnResult = await timed(cmd, args, timeoutMs);
    const hostAfter = hostCpu();
    out.hostBusy = (hostAfter.busy - hostBefore.busy) / Math.max(1, hostAfter.total - hostBefore.total);
    if (gwPid !== undefined && cpuBefore !== null) out.gatewayCpuSeconds = processCpuSeconds(gwPid) - cpuBefore;
    if (r.code !== 0) throw new Error(`exit ${r.code ?? r.signal}: ${lastLines(r.stderr, 5)}`);
    if (route.name === 'gateway') await verifyGatewayBytes(gw, seen, direction, s.bytes);
    out.seconds = r.seconds;
    out.mbPerSecond = s.bytes / 1e6 / r.seconds;
  } catch (err) {
    out.error = errorMessage(err);
    // Whatever the failed run left in the recordings must not count as the next run's session.
    if (route.name === 'gateway') {
      await sleep(1_000);
      for (const x of await listSessions(gw).catch(() => [])) seen.add(x.id);
    }
  }
  return out;
}

// ---- the gateway's own account of a run -----------------------------------------------------------------

interface SessionItem { id: string; endedAt: string | null; endReason: string | null }
interface EventItem { type: string; data: Record<string, unknown> }

async function api<T>(gw: TestGateway, p: string): Promise<T> {
  const res: Response = await fetch(`${gw.url}${p}`, { headers: { authorization: `Bearer ${gw.adminToken}` } });
  const text: string = await res.text();
  if (res.status !== 200) throw new Error(`GET ${p}: ${res.status} ${text}`);
  return JSON.parse(text) as T;
}

async function listSessions(gw: TestGateway): Promise<SessionItem[]> {
  return api<SessionItem[]>(gw, `/api/v1/sessions?identity=${GATEWAY_IDENTITY}&limit=10000`);
}

/**
 * Checks that the gateway relayed every byte: the run's session (the one new since `seen`)
 * records stdinBytes (upload) or stdout.bytes (download) in its ssh.exit event.
 */
async function verifyGatewayBytes(gw: TestGateway, seen: Set<string>, direction: Direction, bytes: number): Promise<void> {
  const deadline: number = Date.now() + 15_000;
  let fresh: SessionItem[] = [];
  for (;;) {
    fresh = (await listSessions(gw)).filter((x) => !seen.has(x.id));
    if ((fresh.length > 0 && fresh.every((x) => x.endedAt !== null)) || Date.now() > deadline) break;
    await sleep(100);
  }
  for (const x of fresh) seen.add(x.id);
  if (fresh.length !== 1) throw new Error(`expected the run's one recorded session, found ${fresh.length}`);
  const { events } = await api<{ events: EventItem[] }>(gw, `/api/v1/sessions/${fresh[0].id}`);
  const exit: EventItem | undefined = events.find((e) => e.type === 'ssh.exit');
  if (exit === undefined) throw new Error(`session ${fresh[0].id} has no ssh.exit event (${fresh[0].endReason ?? 'open'})`);
  const relayed: unknown = direction === 'upload' ? exit.data.stdinBytes : (exit.data.stdout as { bytes?: unknown } | undefined)?.bytes;
  if (relayed !== bytes) throw new Error(`the gateway recorded ${String(relayed)} bytes ${direction === 'upload' ? 'of stdin' : 'of stdout'}, expected ${bytes}`);
}

// ---- connection set-up and ciphers ------------------------------------------------------------------

/** Byte offset of the end of an sshd log, to read only what comes after. */
function logSize(sshd: Sshd): number {
  try {
    return statSync(sshd.logFile).size;
  } catch {
    return 0;
  }
}

function logSince(sshd: Sshd, offset: number): string {
  return readFileSync(sshd.logFile).subarray(offset).toString('utf8');
}

/** "cipher" of the first `kex: client->server cipher: X` line (ssh -v and sshd at LogLevel DEBUG1 both print it). */
function kexCipher(text: string): string | null {
  return /kex: client->server cipher: (\S+)/.exec(text)?.[1] ?? null;
}

/** Times `ssh ROUTE true` a few times, and once with -v to learn each hop's cipher. */
async function probePath(route: Route & { name: PathName }, target: Sshd, jump: Sshd): Promise<PathInfo> {
  const info: PathInfo = { path: route.name, connectMs: null, connectRunsMs: [], hops: [], error: null };
  try {
    const targetFrom: number = logSize(target);
    const jumpFrom: number = logSize(jump);
    const verbose: SpawnResult = await timed('ssh', ['-v', ...route.args, 'true'], 30_000);
    if (verbose.code !== 0) throw new Error(`ssh -v … true: exit ${verbose.code ?? verbose.signal}: ${lastLines(verbose.stderr, 5)}`);
    await sleep(200); // sshd writes its log lines asynchronously (privsep child → monitor → stderr)
    const targetLog: string = logSince(target, targetFrom);
    if (route.name === 'direct') {
      info.hops.push({ hop: 'client → target sshd', cipher: kexCipher(verbose.stderr), source: 'ssh -v' });
    } else if (route.name === 'proxyjump') {
      info.hops.push({ hop: 'client → jump sshd (outer)', cipher: kexCipher(logSince(jump, jumpFrom)), source: 'jump sshd log' });
      info.hops.push({ hop: 'client → target sshd (inner, inside the jump tunnel)', cipher: kexCipher(targetLog), source: 'target sshd log' });
    } else {
      info.hops.push({ hop: 'client → gateway', cipher: kexCipher(verbose.stderr), source: 'ssh -v' });
      info.hops.push({ hop: 'gateway → target sshd', cipher: kexCipher(targetLog), source: 'target sshd log' });
    }
    for (let i = 0; i < CONNECT_PROBES; i++) {
      const r: SpawnResult = await timed('ssh', [...route.args, 'true'], 30_000);
      if (r.code !== 0) throw new Error(`ssh … true: exit ${r.code ?? r.signal}: ${lastLines(r.stderr, 5)}`);
      info.connectRunsMs.push(r.seconds * 1000);
    }
    info.connectMs = median(info.connectRunsMs);
  } catch (err) {
    info.error = errorMessage(err);
  }
  return info;
}

// ---- keystroke echo -----------------------------------------------------------------------------------

/**
 * One interactive session: `ssh -tt ROUTE 'stty raw -echo; printf READY; exec cat'`. The remote
 * pty is raw and does not echo, so each byte goes to cat and cat's copy comes back at once: the
 * round trip of one keystroke through every hop, the target's pty and the program that echoes
 * it, as with a shell's line editor. ssh's own stdin and stdout are pipes (no local pty).
 */
interface EchoSession {
  route: Route;
  child: ChildProcess;
  /** Writes one byte and resolves the ms until it is echoed back. */
  roundTrip(byte: string): Promise<number>;
  close(): Promise<void>;
}

async function openEchoSession(route: Route): Promise<EchoSession> {
  const child: ChildProcess = track(spawn('ssh', ['-tt', '-e', 'none', ...route.args, 'stty raw -echo; printf READY; exec cat'], {
    stdio: ['pipe', 'pipe', 'pipe'], env: clientEnv(), detached: true,
  }));
  let buffered: string = '';
  let stderr: string = '';
  /** The one thing being waited for: settled by output that satisfies it, a timeout, or ssh exiting. */
  let pending: { pred: (text: string) => boolean; settle: (err?: Error) => void } | null = null;
  child.stdout!.on('data', (d: Buffer) => {
    buffered += d.toString('latin1');
    if (pending?.pred(buffered)) pending.settle();
  });
  child.stderr!.on('data', (d: Buffer) => { stderr += d.toString(); });
  child.stdin!.on('error', () => {});
  const exited: Promise<void> = new Promise<void>((resolve) => child.once('close', () => resolve()));
  void exited.then(() => pending?.settle(new Error(`${route.name}: ssh exited (${child.exitCode ?? child.signalCode}); stderr: ${lastLines(stderr, 5)}`)));
  const dead = (): boolean => child.exitCode !== null || child.signalCode !== null;

  const waitFor = (pred: (text: string) => boolean, timeoutMs: number, what: string): Promise<void> =>
    new Promise<void>((resolve, reject) => {
      if (pred(buffered)) return resolve();
      const timer: NodeJS.Timeout = setTimeout(() => {
        pending?.settle(new Error(`${route.name}: ${what} did not arrive within ${timeoutMs} ms; output so far ${JSON.stringify(buffered.slice(-80))}; stderr: ${lastLines(stderr, 5)}`));
      }, timeoutMs);
      pending = {
        pred,
        settle: (err?: Error): void => {
          clearTimeout(timer);
          pending = null;
          if (err === undefined) resolve();
          else reject(err);
        },
      };
    });

  const session: EchoSession = {
    route,
    child,
    async roundTrip(byte: string): Promise<number> {
      if (dead()) throw new Error(`${route.name}: ssh has exited; stderr: ${lastLines(stderr, 5)}`);
      buffered = '';
      const t0: bigint = process.hrtime.bigint();
      child.stdin!.write(byte);
      await waitFor((text) => text.includes(byte), 5_000, `the echo of ${JSON.stringify(byte)}`);
      const ms: number = Number(process.hrtime.bigint() - t0) / 1e6;
      if (buffered !== byte) throw new Error(`${route.name}: expected the echo ${JSON.stringify(byte)}, got ${JSON.stringify(buffered)}`);
      return ms;
    },
    async close(): Promise<void> {
      if (dead()) return;
      killGroup(child, 'SIGTERM');
      const timer: NodeJS.Timeout = setTimeout(() => killGroup(child), 5_000);
      await exited;
      clearTimeout(timer);
    },
  };
  try {
    await waitFor((text) => text.includes('READY'), 20_000, 'READY');
  } catch (err) {
    await session.close();
    throw err;
  }
  return session;
}

/**
 * All sessions open at once; keystrokes go round-robin (one path, then the next), so every path
 * sees the same machine state. 20 unmeasured round trips first.
 */
async function measureEcho(routes: Route[], count: number): Promise<EchoRow[]> {
  const samples: Map<EchoPathName, number[]> = new Map();
  const errors: Map<EchoPathName, string> = new Map();
  const sessions: EchoSession[] = [];
  try {
    for (const route of routes) {
      try {
        sessions.push(await openEchoSession(route));
        samples.set(route.name, []);
      } catch (err) {
        errors.set(route.name, errorMessage(err));
      }
    }
    const letters: string = 'abcdefghijklmnopqrstuvwxyz';
    for (let i = 0; i < KEYSTROKE_WARMUP + count && !interrupted; i++) {
      for (const s of sessions) {
        if (errors.has(s.route.name)) continue;
        try {
          const ms: number = await s.roundTrip(letters[i % letters.length]);
          if (i >= KEYSTROKE_WARMUP) samples.get(s.route.name)!.push(ms);
          // Enter (a control key) measured apart, as it was once held longer than printable keys.
          if (s.route.name === 'direct' || s.route.name === 'gateway') {
            await sleep(KEYSTROKE_PAUSE_MS);
            const enter: number = await s.roundTrip('\r');
            const key = `${s.route.name} Enter` as EchoPathName;
            if (!samples.has(key)) samples.set(key, []);
            if (i >= KEYSTROKE_WARMUP) samples.get(key)!.push(enter);
          }
        } catch (err) {
          errors.set(s.route.name, errorMessage(err));
        }
        await sleep(KEYSTROKE_PAUSE_MS);
      }
    }
  } finally {
    await Promise.all(sessions.map((s) => s.close()));
  }
  const names: EchoPathName[] = [...routes.map((r) => r.name), ...(['direct Enter', 'gateway Enter'] as EchoPathName[]).filter((n) => samples.has(n))];
  const rows: EchoRow[] = names.map((name) => {
    const xs: number[] = samples.get(name) ?? [];
    return { path: name, samples: xs.length, medianMs: median(xs), p95Ms: percentile(xs, 95), meanMs: mean(xs), addedMedianMs: null, addedP95Ms: null, error: errors.get(name) ?? null };
  });
  for (const r of rows) {
    // Each row is compared with the direct path for the same key.
    const direct: EchoRow | undefined = rows.find((d) => d.path === (r.path.endsWith(' Enter') ? 'direct Enter' : 'direct'));
    if (r.path === 'direct' || r.path === 'direct Enter' || direct === undefined) continue;
    r.addedMedianMs = r.medianMs !== null && direct.medianMs !== null ? r.medianMs - direct.medianMs : null;
    r.addedP95Ms = r.p95Ms !== null && direct.p95Ms !== null ? r.p95Ms - direct.p95Ms : null;
  }
  return rows;
}

// ---- report -------------------------------------------------------------------------------------------

function table(header: string[], body: string[][], leftColumns: number): string[] {
  const widths: number[] = header.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const line = (cells: string[]): string => cells.map((c, i) => (i < leftColumns ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ').trimEnd();
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...body.map(line)];
}

function verdicts(rows: ThroughputRow[], echo: EchoRow[]): Verdict[] {
  const out: Verdict[] = [];
  for (const d of DIRECTIONS) {
    const g: ThroughputRow | undefined = rows.find((r) => r.path === 'gateway' && r.direction === d);
    const j: ThroughputRow | undefined = rows.find((r) => r.path === 'proxyjump' && r.direction === d);
    const gv: number | null = g?.medianMbPerSecond ?? null;
    const jv: number | null = j?.medianMbPerSecond ?? null;
    out.push({
      target: `gateway throughput >= ProxyJump (${d}, ${DIRECTION_LABEL[d]})`, compared: 'median MB/s', gateway: gv, reference: jv,
      ratio: ratio(gv, jv), met: gv === null || jv === null ? null : gv >= jv, unit: 'MB/s',
    });
  }
  const ge: EchoRow | undefined = echo.find((r) => r.path === 'gateway');
  const de: EchoRow | undefined = echo.find((r) => r.path === 'direct');
  out.push({
    target: 'gateway adds < 1 ms per keystroke (median echo round trip, gateway - direct)', compared: 'median ms', gateway: ge?.medianMs ?? null,
    reference: de?.medianMs ?? null, ratio: null, met: ge?.addedMedianMs == null ? null : ge.addedMedianMs < 1, unit: 'ms',
  });
  return out;
}

function printReport(s: Settings, rows: ThroughputRow[], infos: PathInfo[], echo: EchoRow[], v: Verdict[], machine: MachineNotes): void {
  const info = (p: PathName): PathInfo | undefined => infos.find((i) => i.path === p);
  console.log(`\nMachine: ${cpus().length} CPUs (${cpus()[0]?.model ?? 'unknown'}), load average ${machine.loadBefore.map((x) => x.toFixed(2)).join(' ')} before, ` +
    `${machine.loadAfter.map((x) => x.toFixed(2)).join(' ')} after; every path's processes share these CPUs.`);
  console.log(`Gateway: Node ${process.version}; ssh2 native crypto addon ${machine.ssh2Native.available ? 'loaded' : `NOT loadable, ssh2 uses its JS crypto fallback (${machine.ssh2Native.reason})`}.`);
  console.log(`\nThroughput: ${s.sizeLabel} (${fmt(s.bytes, 0)} bytes) of zeros per run, ${s.runs} run${s.runs === 1 ? '' : 's'} per path and direction, interleaved; median shown.`);
  console.log('MB/s = 10^6 bytes per second of wall time from spawning the client to its exit (connection set-up included: see "connect ms").');
  console.log(`upload:   head -c N /dev/zero | ssh … 'cat > /dev/null'      download: ssh … 'head -c N /dev/zero' > /dev/null`);
  console.log(`ciphers:  ${s.cipher === null ? 'default negotiation (what users get)' : `client pinned to ${s.cipher} (-F config, so the jump hop too)`}\n`);
  const body: string[][] = rows.map((r) => [
    r.path,
    `${r.direction} (${DIRECTION_LABEL[r.direction]})`,
    r.medianMbPerSecond === null ? 'FAILED' : fmt(r.medianMbPerSecond, 1),
    r.runs.map((x) => (x.mbPerSecond === null ? 'failed' : fmt(x.mbPerSecond, 0))).join(', '),
    fmtRatio(r.ratioToDirect),
    fmtRatio(r.ratioToProxyJump),
    fmt(info(r.path)?.connectMs ?? null, 1),
    `${fmt(median(r.runs.flatMap((x) => (x.hostBusy === null ? [] : [x.hostBusy * 100]))), 0)}%`,
    r.medianGatewayCpuSeconds === null ? '-' : `${fmt(r.medianGatewayCpuSeconds, 2)} s (${fmt(r.medianGatewayCpuSeconds / (s.bytes / 1024 ** 3), 2)} s/GiB)`,
  ]);
  for (const l of table(['path', 'direction', 'MB/s', 'runs (MB/s)', 'vs direct', 'vs ProxyJump', 'connect ms', 'host CPU', 'gateway CPU'], body, 2)) console.log(l);
  console.log(`\n"host CPU": busy share of all ${cpus().length} CPUs during the run (/proc/stat). "gateway CPU": user+system time of the gateway process`);
  console.log('during the run (/proc/<pid>/stat, all threads). "connect ms": median of ' + `${CONNECT_PROBES} × \`ssh … true\` (key exchange, auth, one exec).`);

  console.log('\nNegotiated ciphers:');
  for (const i of infos) {
    for (const h of i.hops) console.log(`  ${i.path.padEnd(10)} ${h.hop.padEnd(52)} ${(h.cipher ?? 'unknown').padEnd(30)} (${h.source})`);
    if (i.error !== null) console.log(`  ${i.path.padEnd(10)} probe failed: ${i.error}`);
  }

  console.log(`\nKeystroke echo: one byte written to \`ssh -tt … 'stty raw -echo; exec cat'\` until it comes back, ${s.keystrokes} per path after ${KEYSTROKE_WARMUP} unmeasured,`);
  console.log(`round-robin over the open sessions with ${KEYSTROKE_PAUSE_MS} ms between keystrokes. "gateway" records typed input durably before forwarding it`);
  console.log(`(the default); "gateway best-effort" is the same target with --recording best-effort. Every keystroke, printable or not,`);
  console.log(`is forwarded once its record is committed; the "Enter" rows measure the Enter key apart.\n`);
  const echoBody: string[][] = echo.map((r) => [
    r.path,
    r.medianMs === null ? 'FAILED' : fmt(r.medianMs, 3),
    fmt(r.p95Ms, 3),
    fmt(r.meanMs, 3),
    r.path === 'direct' ? '-' : signed(r.addedMedianMs, 3),
    r.path === 'direct' ? '-' : signed(r.addedP95Ms, 3),
    String(r.samples),
  ]);
  for (const l of table(['path', 'median ms', 'p95 ms', 'mean ms', 'added (median)', 'added (p95)', 'samples'], echoBody, 1)) console.log(l);

  const problems: string[] = [
    ...rows.flatMap((r) => r.runs.flatMap((x, i) => (x.error === null ? [] : [`${r.path} ${r.direction} run ${i + 1}: ${x.error}`]))),
    ...infos.flatMap((i) => (i.error === null ? [] : [`${i.path} connect probe: ${i.error}`])),
    ...echo.flatMap((r) => (r.error === null ? [] : [`${r.path} keystroke echo: ${r.error}`])),
  ];
  if (problems.length > 0) {
    console.log('\nProblems:');
    for (const p of problems) console.log(`  ${p.replace(/\n/g, '\n    ')}`);
  }

  console.log('\nVerdict:');
  for (const t of v) {
    const status: string = t.met === null ? 'NO DATA' : t.met ? 'MET' : 'NOT MET';
    if (t.unit === 'ms') {
      const added: number | null = t.gateway !== null && t.reference !== null ? t.gateway - t.reference : null;
      console.log(`  ${status.padEnd(7)}  ${t.target}: ${fmt(t.gateway, 3)} vs ${fmt(t.reference, 3)} ms (${signed(added, 3)} ms)`);
    } else {
      console.log(`  ${status.padEnd(7)}  ${t.target}: ${fmt(t.gateway, 1)} vs ${fmt(t.reference, 1)} MB/s${t.ratio === null ? '' : ` (${t.ratio.toFixed(2)}x)`}`);
    }
  }
}

// ---- main -----------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const s: Settings = parseSettings();
  const startedAt: string = new Date().toISOString();
  const loadBefore: number[] = loadavg();
  await readClockTicks();

  const dir: string = mkdtempSync(path.join(tmpdir(), 'gatehouse-bench-ssh-'));
  onCleanup('temp dir', async () => rmSync(dir, { recursive: true, force: true }));
  onCleanup('ssh clients', async () => {
    for (const c of liveChildren) killGroup(c);
  });
  const key: ClientKey = await generateClientKey(dir, 'ed25519', 'bench_ed25519');
  const config: string = writeClientConfig(dir, key, s.cipher);

  // DEBUG1: sshd logs the negotiated cipher ("kex: client->server cipher: …") only from this level;
  // it logs per connection and channel, never per packet.
  const target: Sshd = await startSshd({ config: { LogLevel: 'DEBUG1' } });
  onCleanup('target sshd', () => target.stop());
  target.authorizeKey(key.publicKey);
  const jump: Sshd = await startSshd({ config: { LogLevel: 'DEBUG1', AllowTcpForwarding: 'yes' } });
  onCleanup('jump sshd', () => jump.stop());
  jump.authorizeKey(key.publicKey);
  log(`target sshd on ${HOST}:${target.port}, jump sshd on ${HOST}:${jump.port} (user ${target.user})`);

  // The test harness logs at debug level; the benchmark runs the gateway at its production default.
  const gatewayEnv: NodeJS.ProcessEnv = { GATEHOUSE_LOG_LEVEL: 'info' };
  if (CPU_PROF_DIR !== undefined) {
    mkdirSync(CPU_PROF_DIR, { recursive: true });
    gatewayEnv.NODE_OPTIONS = [process.env.NODE_OPTIONS, '--cpu-prof', `--cpu-prof-dir=${CPU_PROF_DIR}`].filter((o) => o).join(' ');
  }
  const gw: TestGateway = await startTestGateway({ env: gatewayEnv });
  gw.process.once('exit', (code, signal) => { if (!interrupted) log(`gateway exited (${code ?? signal}):\n${lastLines(gw.logs(), 30)}`); });
  onCleanup('gateway', () => gw.stop());
  await setupGateway(gw, target, key);
  log(`gateway ssh on ${HOST}:${gw.sshPort} (api ${gw.url}, pid ${gw.process.pid})`);
  if (CPU_PROF_DIR !== undefined) log(`gateway CPU profile goes to ${CPU_PROF_DIR} when the gateway stops (at the end)`);

  const common: string[] = ['-F', config];
  const routes: Record<RoutePathName, Route> = {
    direct: { name: 'direct', args: [...common, '-p', String(target.port), `${target.user}@${HOST}`] },
    proxyjump: { name: 'proxyjump', args: [...common, '-J', `${jump.user}@${HOST}:${jump.port}`, '-p', String(target.port), `${target.user}@${HOST}`] },
    gateway: { name: 'gateway', args: [...common, '-p', String(gw.sshPort), `${GATEWAY_CONNECTION}@${HOST}`] },
    'gateway best-effort': { name: 'gateway best-effort', args: [...common, '-p', String(gw.sshPort), `${GATEWAY_CONNECTION_BEST_EFFORT}@${HOST}`] },
  };

  const seen: Set<string> = new Set((await listSessions(gw)).map((x) => x.id));
  const markSeen = async (): Promise<void> => {
    await sleep(300);
    for (const x of await listSessions(gw)) seen.add(x.id);
  };

  log('connection set-up and ciphers');
  const infos: PathInfo[] = [];
  for (const p of PATHS) {
    const i: PathInfo = await probePath(routes[p] as Route & { name: PathName }, target, jump);
    // The client only sees "Connection closed": the reason is in the gateway's log.
    if (i.error !== null && p === 'gateway') i.error += `\ngateway log:\n${lastLines(gw.logs(), 10)}`;
    infos.push(i);
    log(`    ${p}: ${i.error ?? `${fmt(i.connectMs, 1)} ms to connect; ${i.hops.map((h) => `${h.hop}: ${h.cipher ?? 'unknown'}`).join('; ')}`}`);
  }
  await markSeen();

  const rows: ThroughputRow[] = [];
  for (const p of PATHS) {
    for (const d of DIRECTIONS) {
      rows.push({ path: p, direction: d, command: streamCommand(routes[p], d, s.bytes).display, runs: [], medianMbPerSecond: null, ratioToDirect: null, ratioToProxyJump: null, medianGatewayCpuSeconds: null });
    }
  }
  const total: number = s.runs * DIRECTIONS.length * PATHS.length;
  let done: number = 0;
  // Runs outermost, and the order of the paths rotates per run: the paths compared with each
  // other run close together in time, and none always goes first.
  for (let i = 0; i < s.runs; i++) {
    for (const d of DIRECTIONS) {
      for (let k = 0; k < PATHS.length; k++) {
        if (interrupted) return;
        const p: PathName = PATHS[(i + k) % PATHS.length];
        log(`[${++done}/${total}] ${p} ${d} ${s.sizeLabel}`);
        const r: ThroughputRun = await throughputRun(routes[p], d, s, gw, seen);
        rows.find((x) => x.path === p && x.direction === d)!.runs.push(r);
        log(`    ${r.mbPerSecond === null ? `FAILED: ${r.error?.split('\n')[0]}` : `${fmt(r.mbPerSecond, 1)} MB/s (${fmt(r.seconds, 2)} s)`}` +
          (r.gatewayCpuSeconds !== null ? `, gateway CPU ${fmt(r.gatewayCpuSeconds, 2)} s` : ''));
        if (r.error !== null && p === 'gateway' && gw.process.exitCode !== null) log(`gateway has exited:\n${lastLines(gw.logs(), 20)}`);
      }
    }
  }
  for (const r of rows) {
    r.medianMbPerSecond = median(r.runs.flatMap((x) => (x.mbPerSecond === null ? [] : [x.mbPerSecond])));
    const cpu: number[] = r.runs.flatMap((x) => (x.gatewayCpuSeconds === null || x.error !== null ? [] : [x.gatewayCpuSeconds]));
    r.medianGatewayCpuSeconds = r.path === 'gateway' ? median(cpu) : null;
  }
  for (const r of rows) {
    const of = (p: PathName): number | null => rows.find((x) => x.path === p && x.direction === r.direction)?.medianMbPerSecond ?? null;
    if (r.path !== 'direct') r.ratioToDirect = ratio(r.medianMbPerSecond, of('direct'));
    if (r.path === 'gateway') r.ratioToProxyJump = ratio(r.medianMbPerSecond, of('proxyjump'));
  }

  if (interrupted) return;
  log(`keystroke echo: ${s.keystrokes} round trips per path (+${KEYSTROKE_WARMUP} warm-up), ${ECHO_PATHS.join(', ')}`);
  const echo: EchoRow[] = await measureEcho(ECHO_PATHS.map((p) => routes[p]), s.keystrokes);

  const v: Verdict[] = verdicts(rows, echo);
  const machine: MachineNotes = { loadBefore, loadAfter: loadavg(), ssh2Native: ssh2NativeCrypto() };
  printReport(s, rows, infos, echo, v, machine);

  const results = {
    startedAt,
    finishedAt: new Date().toISOString(),
    settings: { ...s, keystrokeWarmup: KEYSTROKE_WARMUP, keystrokePauseMs: KEYSTROKE_PAUSE_MS, connectProbes: CONNECT_PROBES },
    machine: { cpus: cpus().length, cpuModel: cpus()[0]?.model ?? null, loadavgBefore: loadBefore, loadavgAfter: machine.loadAfter, ssh2NativeCrypto: machine.ssh2Native },
    versions: {
      node: process.version,
      ssh: await firstLine('ssh', ['-V']),
      sshd: await firstLine(SSHD_BIN, ['-V']),
      gatehouse: await firstLine('git', ['-C', REPO_ROOT, 'rev-parse', 'HEAD']),
    },
    notes: 'MB/s = 10^6 bytes/s over the whole ssh command (connection set-up included). Keystroke echo through a raw remote pty and cat.',
    paths: infos,
    throughput: rows,
    keystrokeEcho: echo,
    verdict: v,
  };
  mkdirSync(path.dirname(RESULTS_FILE), { recursive: true });
  writeFileSync(RESULTS_FILE, JSON.stringify(results, null, 2) + '\n');
  console.log(`\nresults written to ${path.relative(process.cwd(), RESULTS_FILE) || RESULTS_FILE}`);
}

try {
  await main();
} catch (err) {
  console.error(`bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  process.exitCode = 1;
} finally {
  await cleanupAll();
}
