// Git fixtures: bare repositories with real commits, and a smart-HTTP server (`git http-backend`
// behind a small node:http server on 127.0.0.1:<free port>). Serving over SSH needs no extra
// code: sshd.ts runs git-upload-pack / git-receive-pack for ssh:// URLs.
//
// All git commands run with gitEnv(): no system or global config, a fixed author/committer,
// init.defaultBranch=main, no credential prompts.
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { run } from './processes.ts';
import type { RunResult } from './processes.ts';

const HOST: string = '127.0.0.1';

/** Caller's environment without GIT_* variables, plus a config-free, prompt-free git setup. */
export function gitEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('GIT_')) env[k] = v;
  return {
    ...env,
    LC_ALL: 'C',
    GIT_CONFIG_NOSYSTEM: '1',
    GIT_CONFIG_GLOBAL: '/dev/null',
    GIT_CONFIG_COUNT: '2',
    GIT_CONFIG_KEY_0: 'init.defaultBranch',
    GIT_CONFIG_VALUE_0: 'main',
    GIT_CONFIG_KEY_1: 'advice.detachedHead',
    GIT_CONFIG_VALUE_1: 'false',
    GIT_AUTHOR_NAME: 'Gatehouse Test',
    GIT_AUTHOR_EMAIL: 'test@gatehouse.invalid',
    GIT_COMMITTER_NAME: 'Gatehouse Test',
    GIT_COMMITTER_EMAIL: 'test@gatehouse.invalid',
    GIT_TERMINAL_PROMPT: '0',
    ...extra,
  };
}

/** Runs `git -C dir args` with gitEnv(env); resolves whatever the exit code (60 s timeout). */
export function gitRun(dir: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<RunResult> {
  return run('git', ['-C', dir, ...args], { env: gitEnv(env), timeoutMs: 60_000 });
}

/** Runs `git -C dir args`; returns stdout without its final newline, throws with stderr on failure. */
export async function gitIn(dir: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<string> {
  const r: RunResult = await gitRun(dir, args, env);
  if (r.code !== 0) throw new Error(`git ${args.join(' ')} (in ${dir}) failed (code ${r.code}):\n${r.stderr}${r.stdout}`);
  return r.stdout.endsWith('\n') ? r.stdout.slice(0, -1) : r.stdout;
}

/** Writes `file` (relative to workdir), commits it, returns the new commit id. */
export async function makeCommit(workdir: string, file: string, content: string, message: string): Promise<string> {
  const path: string = join(workdir, file);
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, content);
  await gitIn(workdir, ['add', '--', file]);
  await gitIn(workdir, ['commit', '-q', '-m', message]);
  return gitIn(workdir, ['rev-parse', 'HEAD']);
}

export interface BareRepo {
  /** Absolute path of the bare repository (`<root>/<name>.git`). */
  path: string;
  /** Name relative to root, with .git: what goes after the server URL. */
  name: string;
  branch: string;
  /** Commit ids, oldest first. */
  commits: string[];
  /** Tip of `branch` (undefined when created without commits). */
  head: string | undefined;
}

/**
 * Creates `<root>/<name>.git` with `initialCommits` (default 1) commits on `branch` (default
 * main), made in a temp work repo and pushed. Pushing over HTTP is enabled (http.receivepack).
 */
export async function createBareRepo(
  root: string,
  name: string,
  opts: { initialCommits?: number; branch?: string } = {},
): Promise<BareRepo> {
  const branch: string = opts.branch ?? 'main';
  const repoName: string = name.endsWith('.git') ? name : `${name}.git`;
  const path: string = join(root, repoName);
  mkdirSync(root, { recursive: true });
  await gitIn(root, ['init', '-q', '--bare', `--initial-branch=${branch}`, path]);
  await gitIn(path, ['config', 'http.receivepack', 'true']);
  const commits: string[] = [];
  const n: number = opts.initialCommits ?? 1;
  if (n > 0) {
    const work: string = mkdtempSync(join(tmpdir(), 'gatehouse-git-work-'));
    try {
      await gitIn(work, ['init', '-q', `--initial-branch=${branch}`]);
      for (let i: number = 1; i <= n; i++) {
        commits.push(await makeCommit(work, i === 1 ? 'README.md' : `file-${i}.txt`, `${repoName} commit ${i}\n`, `commit ${i}`));
      }
      await gitIn(work, ['push', '-q', path, `${branch}:refs/heads/${branch}`]);
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  }
  return { path, name: repoName, branch, commits, head: commits[commits.length - 1] };
}

// ---------------------------------------------------------------------------------------------
// Smart HTTP

export interface GitHttpRequest {
  method: string;
  /** Path and query as requested, e.g. "/repo.git/info/refs?service=git-upload-pack". */
  path: string;
  /** Final response status (0 until the response is finished). */
  status: number;
  /** The Git-Protocol request header ("version=2" for protocol v2), if any. */
  gitProtocol: string | undefined;
  /** Authenticated user, if any. */
  user: string | undefined;
}

export interface GitHttpServer {
  /** http://127.0.0.1:PORT — a repo is at `${url}/${name}.git`. */
  url: string;
  port: number;
  /** Every request so far, in arrival order. */
  requests: GitHttpRequest[];
  /** stderr of the http-backend processes so far. */
  logs(): string;
  /** Closes the server and its connections, kills running http-backend processes. Idempotent. */
  stop(): Promise<void>;
}

export interface GitHttpServerOptions {
  /** GIT_PROJECT_ROOT: the directory holding the bare repos. */
  root: string;
  /** Require HTTP basic auth with these credentials (401 + WWW-Authenticate otherwise). */
  auth?: { user: string; password: string };
}

function checkAuth(req: IncomingMessage, auth: { user: string; password: string }): string | undefined {
  const m: RegExpExecArray | null = /^Basic\s+(\S+)$/i.exec(req.headers.authorization ?? '');
  if (!m) return undefined;
  const decoded: string = Buffer.from(m[1], 'base64').toString('utf8');
  const colon: number = decoded.indexOf(':');
  if (colon < 0) return undefined;
  const user: string = decoded.slice(0, colon);
  return user === auth.user && decoded.slice(colon + 1) === auth.password ? user : undefined;
}

/** Finds the end of the CGI header block; returns [headerEnd, bodyStart] or undefined. */
function headerEnd(buf: Buffer): [number, number] | undefined {
  const crlf: number = buf.indexOf('\r\n\r\n');
  const lf: number = buf.indexOf('\n\n');
  if (crlf >= 0 && (lf < 0 || crlf < lf)) return [crlf, crlf + 4];
  if (lf >= 0) return [lf, lf + 2];
  return undefined;
}

export async function startGitHttpServer(opts: GitHttpServerOptions): Promise<GitHttpServer> {
  const requests: GitHttpRequest[] = [];
  const children: Set<ChildProcess> = new Set();
  let stderr: string = '';

  const handle = (req: IncomingMessage, res: ServerResponse): void => {
    const url: URL = new URL(req.url ?? '/', `http://${HOST}`);
    let pathInfo: string;
    try {
      pathInfo = decodeURIComponent(url.pathname);
    } catch {
      res.writeHead(400).end('bad path\n');
      return;
    }
    const entry: GitHttpRequest = {
      method: req.method ?? 'GET',
      path: req.url ?? '/',
      status: 0,
      gitProtocol: req.headers['git-protocol'] as string | undefined,
      user: undefined,
    };
    requests.push(entry);
    res.on('finish', () => {
      entry.status = res.statusCode;
    });

    if (opts.auth !== undefined) {
      entry.user = checkAuth(req, opts.auth);
      if (entry.user === undefined) {
        req.resume();
        res.writeHead(401, { 'WWW-Authenticate': 'Basic realm="gatehouse-test"', 'Content-Type': 'text/plain' });
        res.end('authentication required\n');
        return;
      }
    }

    const env: NodeJS.ProcessEnv = gitEnv({
      GIT_PROJECT_ROOT: opts.root,
      GIT_HTTP_EXPORT_ALL: '1',
      // Push allowed for every repo, whoever created it (createBareRepo also sets it per repo).
      GIT_CONFIG_COUNT: '2',
      GIT_CONFIG_KEY_0: 'http.receivepack',
      GIT_CONFIG_VALUE_0: 'true',
      GIT_CONFIG_KEY_1: 'safe.directory',
      GIT_CONFIG_VALUE_1: '*',
      GATEWAY_INTERFACE: 'CGI/1.1',
      SERVER_PROTOCOL: `HTTP/${req.httpVersion}`,
      SERVER_SOFTWARE: 'gatehouse-test',
      REQUEST_METHOD: req.method ?? 'GET',
      PATH_INFO: pathInfo,
      QUERY_STRING: url.search.replace(/^\?/, ''),
      REMOTE_ADDR: req.socket.remoteAddress ?? '',
    });
    if (req.headers['content-type'] !== undefined) env.CONTENT_TYPE = req.headers['content-type'];
    // Without CONTENT_LENGTH (chunked upload) http-backend reads the body until EOF.
    if (req.headers['content-length'] !== undefined) env.CONTENT_LENGTH = req.headers['content-length'];
    if (req.headers['content-encoding'] !== undefined) env.HTTP_CONTENT_ENCODING = req.headers['content-encoding'];
    if (entry.gitProtocol !== undefined) env.HTTP_GIT_PROTOCOL = entry.gitProtocol;
    if (entry.user !== undefined) env.REMOTE_USER = entry.user;

    const child: ChildProcess = spawn('git', ['http-backend'], { env, stdio: ['pipe', 'pipe', 'pipe'] });
    children.add(child);
    child.stderr!.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    child.stdin!.on('error', () => {}); // backend may exit before reading everything
    req.pipe(child.stdin!);

    let head: Buffer = Buffer.alloc(0);
    let headersSent: boolean = false;
    const onData = (chunk: Buffer): void => {
      head = Buffer.concat([head, chunk]);
      const end: [number, number] | undefined = headerEnd(head);
      if (end === undefined) return;
      headersSent = true;
      child.stdout!.removeListener('data', onData);
      let status: number = 200;
      for (const line of head.subarray(0, end[0]).toString('latin1').split(/\r?\n/)) {
        const colon: number = line.indexOf(':');
        if (colon <= 0) continue;
        const key: string = line.slice(0, colon).trim();
        const value: string = line.slice(colon + 1).trim();
        if (key.toLowerCase() === 'status') status = Number.parseInt(value, 10);
        else res.setHeader(key, value);
      }
      res.statusCode = status;
      res.write(head.subarray(end[1]));
      child.stdout!.pipe(res);
    };
    child.stdout!.on('data', onData);
    child.on('error', (e: Error) => {
      stderr += `spawn git http-backend: ${e.message}\n`;
    });
    child.on('close', (code: number | null) => {
      children.delete(child);
      if (!headersSent) {
        res.statusCode = 500;
        res.setHeader('Content-Type', 'text/plain');
        res.end(`git http-backend exited with ${code} before sending headers\n`);
      }
    });
    res.on('close', () => {
      // Client went away mid-response: nobody will read the rest.
      if (!res.writableFinished && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    });
  };

  const server: Server = createServer(handle);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, HOST, () => resolve());
  });
  const port: number = (server.address() as AddressInfo).port;

  let stopped: boolean = false;
  return {
    url: `http://${HOST}:${port}`,
    port,
    requests,
    logs: (): string => stderr,
    async stop(): Promise<void> {
      if (stopped) return;
      stopped = true;
      const closed: Promise<void> = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
      await closed;
    },
  };
}
