// Shared helpers for the git protocol tests: real repositories made with the git binary, and a
// target probe that talks to a real `git upload-pack` process.

import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync, mkdirSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { AdvertisementReader, type ObjectFormat } from '../../src/engines/git/refs.ts';
import { buildUploadPackProbe, probeOptionsFor, UploadPackResponseReader } from '../../src/engines/git/upload-pack.ts';
import { readPackCommits } from '../../src/engines/git/pack.ts';

export const NODE = process.execPath;
export const SRC_GIT = join(dirname(new URL(import.meta.url).pathname), '../../src/engines/git');

export function tempDir(prefix = 'gatehouse-git-'): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** An environment that keeps the user's and system git configuration out of the tests. */
export function gitEnv(home: string, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return {
    PATH: process.env.PATH,
    HOME: home,
    GIT_CONFIG_NOSYSTEM: '1',
    GIT_CONFIG_GLOBAL: '/dev/null',
    GIT_AUTHOR_NAME: 'Test Author',
    GIT_AUTHOR_EMAIL: 'author@example.com',
    GIT_COMMITTER_NAME: 'Test Committer',
    GIT_COMMITTER_EMAIL: 'committer@example.com',
    GIT_AUTHOR_DATE: '1700000000 +0000',
    GIT_COMMITTER_DATE: '1700000000 +0000',
    LANG: 'C',
    LC_ALL: 'C',
    ...extra,
  };
}

export interface GitResult {
  stdout: Buffer;
  stderr: string;
  status: number | null;
}

export class Sandbox {
  readonly dir: string;
  readonly env: NodeJS.ProcessEnv;
  private tick = 0;

  constructor(dir: string, extraEnv: Record<string, string> = {}) {
    this.dir = dir;
    this.env = gitEnv(dir, extraEnv);
  }

  path(...parts: string[]): string {
    return join(this.dir, ...parts);
  }

  /** Runs git; throws with its stderr unless `allowFail`. */
  run(cwd: string, args: string[], opts: { input?: Buffer | string; env?: Record<string, string>; allowFail?: boolean } = {}): GitResult {
    const r = spawnSync('git', args, {
      cwd,
      input: opts.input,
      env: { ...this.env, ...opts.env },
      maxBuffer: 256 * 1024 * 1024,
      timeout: 60_000, // a protocol bug tends to leave git waiting for bytes forever
    });
    if (r.error) throw new Error(`git ${args.join(' ')}: ${r.error.message}`);
    const res = { stdout: r.stdout, stderr: r.stderr.toString(), status: r.status };
    if (!opts.allowFail && r.status !== 0) {
      throw new Error(`git ${args.join(' ')} failed (${r.status}): ${res.stderr}`);
    }
    return res;
  }

  git(cwd: string, ...args: string[]): string {
    return this.run(cwd, args).stdout.toString().trim();
  }

  initBare(name: string, objectFormat: ObjectFormat = 'sha1'): string {
    const p = this.path(name);
    this.run(this.dir, ['init', '-q', '--bare', `--object-format=${objectFormat}`, '-b', 'main', p]);
    return p;
  }

  initWork(name: string, objectFormat: ObjectFormat = 'sha1'): string {
    const p = this.path(name);
    this.run(this.dir, ['init', '-q', `--object-format=${objectFormat}`, '-b', 'main', p]);
    return p;
  }

  /** Writes files and commits them; distinct commit dates keep ids distinct for identical trees. */
  commit(repo: string, files: Record<string, string>, message: string): string {
    for (const [name, content] of Object.entries(files)) {
      const f = join(repo, name);
      mkdirSync(dirname(f), { recursive: true });
      writeFileSync(f, content);
    }
    this.run(repo, ['add', '-A']);
    const date = `${1700000000 + ++this.tick * 60} +0000`;
    this.run(repo, ['commit', '-q', '--allow-empty', '-m', message], { env: { GIT_AUTHOR_DATE: date, GIT_COMMITTER_DATE: date } });
    return this.git(repo, 'rev-parse', 'HEAD');
  }

  /** `git pack-objects --stdout --revs` over the given rev lines ("new", "^old"). */
  pack(repo: string, revs: string[], flags: string[] = []): Buffer {
    return this.run(repo, ['pack-objects', '--stdout', '--revs', '-q', ...flags], { input: revs.join('\n') + '\n' }).stdout;
  }

  /** commit id → parents for `revs`, from git itself. */
  parents(repo: string, ...revs: string[]): Map<string, string[]> {
    const out = this.git(repo, 'rev-list', '--parents', ...revs);
    const m = new Map<string, string[]>();
    for (const line of out.split('\n')) {
      if (line === '') continue;
      const [id, ...ps] = line.split(' ');
      m.set(id, ps);
    }
    return m;
  }

  /** Writes an executable shell script into the sandbox. */
  script(name: string, body: string): string {
    const p = this.path(name);
    writeFileSync(p, body);
    chmodSync(p, 0o755);
    return p;
  }
}

export interface ProbeRun {
  commits: Map<string, string[]> | null;
  error: string | null;
  stored: { commit: number; tree: number; blob: number; tag: number } | null;
}

/**
 * Asks a real `git upload-pack` for the history of `tips` not contained in `have`, as a gateway
 * would over an SSH exec channel: read the advertisement, send the probe, read the reply.
 */
export function probeTarget(
  repo: string,
  tips: string[],
  have: string,
  opts: { protocol?: 0 | 2; filter?: boolean; env?: NodeJS.ProcessEnv; config?: string[] } = {},
): Promise<ProbeRun> {
  return new Promise((resolve) => {
    const args = [...(opts.config ?? []).flatMap((c) => ['-c', c]), 'upload-pack', repo];
    const env = { ...(opts.env ?? process.env), GIT_PROTOCOL: opts.protocol === 2 ? 'version=2' : '' };
    const child = spawn('git', args, { env, stdio: ['pipe', 'pipe', 'pipe'] });
    const ad = new AdvertisementReader();
    let reply: UploadPackResponseReader | null = null;
    let settled = false;
    let stderr = '';
    const finish = (r: ProbeRun) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      child.kill();
      resolve(r);
    };
    const fail = (msg: string) => finish({ commits: null, error: msg, stored: null });
    const timer = setTimeout(() => fail('probe timed out'), 30_000);
    child.stdin.on('error', () => {}); // the server may exit before reading everything (e.g. "not our ref")
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const onReply = () => {
      if (reply === null || !reply.done) return;
      try {
        const pack = readPackCommits(reply.pack!, ad.result!.objectFormat);
        finish({ commits: pack.commits, error: null, stored: pack.stored });
      } catch (err) {
        fail((err as Error).message);
      }
    };
    child.stdout.on('data', (chunk: Buffer) => {
      try {
        if (reply === null) {
          ad.push(chunk);
          if (ad.result === null) return;
          const o = probeOptionsFor(ad.result);
          const options = { protocol: o.protocol, filter: opts.filter ?? o.filter };
          reply = new UploadPackResponseReader({ protocol: options.protocol });
          child.stdin.write(buildUploadPackProbe(tips, have, ad.result.objectFormat, options));
          const rest = ad.takeRemainder();
          if (rest.length > 0) reply.push(rest);
        } else {
          reply.push(chunk);
        }
        onReply();
      } catch (err) {
        fail((err as Error).message);
      }
    });
    child.on('close', () => fail(`upload-pack exited before a complete reply: ${stderr.trim()}`));
  });
}

/** An askTarget callback for decideFastForward backed by probeTarget. */
export function askTargetFor(repo: string, opts: Parameters<typeof probeTarget>[3] = {}, log?: ProbeRun[]) {
  return async (tips: string[], have: string): Promise<Map<string, string[]> | null> => {
    const r = await probeTarget(repo, tips, have, opts);
    log?.push(r);
    return r.commits;
  };
}
