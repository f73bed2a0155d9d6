// Small process helpers shared by tests. Node built-ins only.
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { connect } from 'node:net';
import type { Socket } from 'node:net';

export interface RunOptions {
  env?: NodeJS.ProcessEnv;
  /** Written to the child's stdin, which is then closed. Without it stdin is closed immediately. */
  input?: string;
  /** Kill the child (SIGKILL) and reject if it has not exited after this many ms. */
  timeoutMs?: number;
  cwd?: string;
}

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/**
 * Run a command to completion and collect its output. Resolves whatever the exit
 * code is (check `code` yourself); rejects only if the command cannot be spawned
 * or the timeout fires.
 */
export function run(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise<RunResult>((resolve, reject) => {
    const child: ChildProcess = spawn(cmd, args, {
      env: opts.env ?? process.env,
      cwd: opts.cwd,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let settled = false;
    let timer: NodeJS.Timeout | undefined;

    const finish = (fn: () => void): void => {
      if (settled) return;
      settled = true;
      if (timer !== undefined) clearTimeout(timer);
      fn();
    };

    child.stdout?.on('data', (chunk: Buffer) => out.push(chunk));
    child.stderr?.on('data', (chunk: Buffer) => err.push(chunk));
    child.on('error', (e: Error) => finish(() => reject(e)));
    child.on('close', (code: number | null, signal: NodeJS.Signals | null) => {
      finish(() =>
        resolve({
          code,
          signal,
          stdout: Buffer.concat(out).toString('utf8'),
          stderr: Buffer.concat(err).toString('utf8'),
        }),
      );
    });

    if (opts.timeoutMs !== undefined) {
      timer = setTimeout(() => {
        child.kill('SIGKILL');
        finish(() =>
          reject(
            new Error(
              `${cmd} ${args.join(' ')} timed out after ${opts.timeoutMs} ms\n` +
                `stdout: ${Buffer.concat(out).toString('utf8')}\nstderr: ${Buffer.concat(err).toString('utf8')}`,
            ),
          ),
        );
      }, opts.timeoutMs);
    }

    // The child may exit before consuming stdin; ignore EPIPE and friends.
    child.stdin?.on('error', () => {});
    child.stdin?.end(opts.input ?? '');
  });
}

function tryConnect(port: number, host: string): Promise<boolean> {
  return new Promise<boolean>((resolve) => {
    const sock: Socket = connect({ port, host });
    const done = (ok: boolean): void => {
      sock.removeAllListeners();
      sock.on('error', () => {});
      sock.destroy();
      resolve(ok);
    };
    sock.setTimeout(1000, () => done(false));
    sock.once('connect', () => done(true));
    sock.once('error', () => done(false));
  });
}

/** Poll until `host:port` accepts a TCP connection; throws after `timeoutMs`. */
export async function waitForPort(port: number, host: string = '127.0.0.1', timeoutMs: number = 10_000): Promise<void> {
  const deadline: number = Date.now() + timeoutMs;
  for (;;) {
    if (await tryConnect(port, host)) return;
    if (Date.now() >= deadline) {
      throw new Error(`port ${host}:${port} did not accept connections within ${timeoutMs} ms`);
    }
    await new Promise<void>((r) => setTimeout(r, 50));
  }
}
