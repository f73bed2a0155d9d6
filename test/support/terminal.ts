// Drives an interactive program through a real pty, headless, with tmux.
//
// Each terminal is its own tmux server on a private socket (`-S <tmp>/sock`, `-f <tmp>/tmux.conf`),
// so parallel runs and leftovers never collide with each other or with a user's tmux. The pane
// keeps its content after the program exits (remain-on-exit) so the exit status can be read
// from #{pane_dead_status}. resize() uses `resize-window`, which sets the window to a manual size
// and changes the pty size, so the program gets a real SIGWINCH.
//
// tmux 3.3a notes: `set -g window-size manual` in the config file (before the first session
// exists) makes the server crash, so resize-window sets it per window instead; and the server
// sometimes misses the SIGCHLD of the pane's program, see waitExit().
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run } from './processes.ts';
import type { RunResult } from './processes.ts';

export const TMUX_BIN: string = '/usr/bin/tmux';

export interface TerminalOptions {
  /** argv of the program (run directly, not through a shell). */
  command: string[];
  cols?: number; // default 80
  rows?: number; // default 24
  /** Added to the caller's environment (TMUX* variables are removed). tmux sets TERM itself, see `term`. */
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** TERM inside the pane (tmux's default-terminal); default tmux's own (tmux-256color on Debian 12). */
  term?: string;
}

export interface Terminal {
  /** The tmux socket, for ad-hoc `tmux -S socket ...` while debugging. */
  socket: string;
  /** Types `text` literally; '\n' is sent as Enter (CR), like a real keyboard. */
  send(text: string): Promise<void>;
  /** Sends tmux key names: sendKeys('C-c'), sendKeys('Up', 'Enter'). */
  sendKeys(...keys: string[]): Promise<void>;
  /**
   * Polls the screen (and scrollback) until `pattern` shows up; returns the captured text.
   * Earlier output counts too, so wait for markers that appear only once.
   */
  waitFor(pattern: string | RegExp, timeoutMs?: number): Promise<string>;
  /**
   * Visible screen (or with `history`, scrollback + screen); wrapped lines joined, trailing blanks
   * trimmed. When the program exits, tmux may scroll its last output into the history.
   */
  capture(opts?: { history?: boolean }): Promise<string>;
  /** Changes the pty size: the program gets SIGWINCH. */
  resize(cols: number, rows: number): Promise<void>;
  /** Current pty size as tmux sees it. */
  size(): Promise<{ cols: number; rows: number }>;
  /** Waits for the program to exit; resolves its exit status (null if killed by a signal). */
  waitExit(timeoutMs?: number): Promise<number | null>;
  /** Sends `text` and returns the ms until `expect` (default: `text` without newlines) is on screen. */
  measureEcho(text: string, expect?: string | RegExp, timeoutMs?: number): Promise<number>;
  /** Kills the tmux server and the program, removes the temp dir. Idempotent. */
  kill(): Promise<void>;
}

const TMUX_CONF: string = [
  '# written by test/support/terminal.ts',
  'set -g remain-on-exit on',
  'set -g status off',
  'set -g history-limit 10000',
  'set -s escape-time 0',
  'set -g exit-empty off',
  '',
].join('\n');

function tmuxEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('TMUX')) env[k] = v;
  return { ...env, ...extra };
}

function trimScreen(text: string): string {
  const lines: string[] = text.split('\n').map((l) => l.trimEnd());
  while (lines.length > 0 && lines[lines.length - 1] === '') lines.pop();
  return lines.join('\n');
}

function matches(text: string, pattern: string | RegExp): boolean {
  return typeof pattern === 'string' ? text.includes(pattern) : pattern.test(text);
}

const sleep = (ms: number): Promise<void> => new Promise<void>((r) => setTimeout(r, ms));

/**
 * SIGKILL `pid` if it is still one of ours: the tmux server (socket path in its argv) or a pane
 * process (TMUX=<socket>,... in its environment). Guards against pids reused after an exit.
 */
function killIfOurs(pid: number | undefined, socket: string): void {
  if (pid === undefined || !(pid > 0)) return;
  try {
    const cmdline: string = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    const environ: string = readFileSync(`/proc/${pid}/environ`, 'utf8');
    if (!cmdline.includes(socket) && !environ.includes(`TMUX=${socket},`)) return;
    process.kill(pid, 'SIGKILL');
  } catch {
    // already gone
  }
}

// Last-resort cleanup if a test run exits without calling kill().
const live: Map<string, () => void> = new Map();
let exitHookInstalled: boolean = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const cleanup of live.values()) {
      try {
        cleanup();
      } catch {
        // best effort
      }
    }
    live.clear();
  });
}

export async function startTerminal(opts: TerminalOptions): Promise<Terminal> {
  if (opts.command.length === 0) throw new Error('startTerminal: empty command');
  const dir: string = mkdtempSync(join(tmpdir(), 'gatehouse-tmux-'));
  const socket: string = join(dir, 'sock');
  const conf: string = join(dir, 'tmux.conf');
  writeFileSync(conf, TMUX_CONF + (opts.term ? `set -g default-terminal "${opts.term}"\n` : ''));
  const env: NodeJS.ProcessEnv = tmuxEnv(opts.env);
  const target: string = 'main:0.0';
  let serverPid: number | undefined;
  let panePid: number | undefined;
  let killed: boolean = false;

  const tmux = async (args: string[]): Promise<string> => {
    const r: RunResult = await run(TMUX_BIN, ['-S', socket, '-f', conf, ...args], { env, timeoutMs: 10_000 });
    if (r.code !== 0) throw new Error(`tmux ${args.join(' ')} failed (code ${r.code}): ${r.stderr.trim()}`);
    return r.stdout;
  };

  const cleanupSync = (): void => {
    try {
      execFileSync(TMUX_BIN, ['-S', socket, 'kill-server'], { stdio: 'ignore', timeout: 5000, env });
    } catch {
      // not running
    }
    killIfOurs(panePid, socket);
    killIfOurs(serverPid, socket);
    rmSync(dir, { recursive: true, force: true });
  };
  installExitHook();
  live.set(dir, cleanupSync);

  const capture = async (o: { history?: boolean } = {}): Promise<string> =>
    trimScreen(await tmux(['capture-pane', '-p', '-J', '-t', target, ...(o.history ? ['-S', '-'] : [])]));

  const poll = async (pattern: string | RegExp, timeoutMs: number, intervalMs: number): Promise<string> => {
    const deadline: number = Date.now() + timeoutMs;
    for (;;) {
      const text: string = await capture({ history: true });
      if (matches(text, pattern)) return text;
      if (Date.now() >= deadline) {
        throw new Error(`terminal: ${String(pattern)} did not appear within ${timeoutMs} ms; screen:\n${text}`);
      }
      await sleep(intervalMs);
    }
  };

  const send = async (text: string): Promise<void> => {
    if (text !== '') await tmux(['send-keys', '-t', target, '-l', '--', text.replace(/\n/g, '\r')]);
  };

  const term: Terminal = {
    socket,
    send,
    async sendKeys(...keys: string[]): Promise<void> {
      await tmux(['send-keys', '-t', target, '--', ...keys]);
    },
    waitFor: (pattern: string | RegExp, timeoutMs: number = 10_000): Promise<string> => poll(pattern, timeoutMs, 20),
    capture,
    async resize(cols: number, rows: number): Promise<void> {
      await tmux(['resize-window', '-t', 'main:0', '-x', String(cols), '-y', String(rows)]);
    },
    async size(): Promise<{ cols: number; rows: number }> {
      const [cols, rows] = (await tmux(['display-message', '-p', '-t', target, '#{pane_width} #{pane_height}'])).trim().split(' ');
      return { cols: Number(cols), rows: Number(rows) };
    },
    async waitExit(timeoutMs: number = 10_000): Promise<number | null> {
      const deadline: number = Date.now() + timeoutMs;
      for (;;) {
        const [dead, status, signal] = (
          await tmux(['display-message', '-p', '-t', target, '#{pane_dead}|#{pane_dead_status}|#{pane_dead_signal}'])
        ).trim().split('|');
        // pane_dead turns 1 at EOF on the pty, possibly before tmux has reaped the program.
        if (dead === '1' && signal !== '') return null;
        if (dead === '1' && status !== '') return Number(status);
        // tmux 3.3a sometimes misses the SIGCHLD of the pane's program (a zombie, no status, until
        // another child of the server exits): make one exit so that it reaps them all.
        if (dead === '1') await tmux(['run-shell', 'true']);
        if (Date.now() >= deadline) {
          throw new Error(`terminal: program did not exit within ${timeoutMs} ms; screen:\n${await capture()}`);
        }
        await sleep(20);
      }
    },
    async measureEcho(text: string, expect?: string | RegExp, timeoutMs: number = 5000): Promise<number> {
      const t0: number = performance.now();
      await send(text);
      await poll(expect ?? text.replace(/\n/g, ''), timeoutMs, 2);
      return performance.now() - t0;
    },
    async kill(): Promise<void> {
      if (killed) return;
      killed = true;
      await run(TMUX_BIN, ['-S', socket, 'kill-server'], { env, timeoutMs: 5000 }).catch(() => undefined);
      killIfOurs(panePid, socket);
      killIfOurs(serverPid, socket);
      rmSync(dir, { recursive: true, force: true });
      live.delete(dir);
    },
  };

  try {
    const cols: number = opts.cols ?? 80;
    const rows: number = opts.rows ?? 24;
    // One argv word would be run through `sh -c`; quote it so it is run as is.
    const argv: string[] = opts.command.length === 1 ? [`'${opts.command[0].replace(/'/g, `'\\''`)}'`] : opts.command;
    await tmux([
      'new-session', '-d', '-s', 'main', '-x', String(cols), '-y', String(rows), ...(opts.cwd ? ['-c', opts.cwd] : []), '--', ...argv,
    ]);
    const [spid, ppid] = (await tmux(['display-message', '-p', '-t', target, '#{pid} #{pane_pid}'])).trim().split(' ');
    serverPid = Number(spid);
    panePid = Number(ppid);
    // Fix the size at cols x rows whatever clients attach later (sets window-size manual).
    await term.resize(cols, rows);
  } catch (e) {
    await term.kill();
    throw e;
  }
  return term;
}
