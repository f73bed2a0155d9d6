// Shared by the Git transport tests (ssh.test.ts, http.test.ts): recordings read back through the
// API, and small git helpers (a work clone, commits of random data, reading a bare repository).
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gitEnv, gitIn, gitRun } from '../support/git-servers.ts';
import { run, type RunResult } from '../support/processes.ts';

export { api, describeEvents, eventsOf, newRecordings, oneEvent, recordAll, recordOne, sessionIds, type Data, type Recording } from '../support/recordings.ts';
import { describeEvents, type Data, type Recording } from '../support/recordings.ts';

export const ZERO_ID = '0'.repeat(40);

export function seqOf(rec: Recording, type: string): number {
  const e = rec.events.find((x) => x.type === type);
  assert.ok(e, `a ${type} event; events:\n${describeEvents(rec)}`);
  return e.seq;
}

export interface RecordedUpdateView {
  ref: string; old: string; new: string; class: string; evidence: string; protectedBy?: string; allowed?: boolean; reason?: string;
}

export function updatesOf(d: Data): RecordedUpdateView[] {
  assert.ok(Array.isArray(d.updates), `updates recorded: ${JSON.stringify(d)}`);
  return d.updates as RecordedUpdateView[];
}

export function updateFor(d: Data, ref: string): RecordedUpdateView {
  const u = updatesOf(d).filter((x) => x.ref === ref);
  assert.equal(u.length, 1, `one recorded update of ${ref}: ${JSON.stringify(d.updates)}`);
  return u[0];
}

// ── Git ─────────────────────────────────────────────────────────────────────────────────────

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** `git ARGS` in `cwd` with gitEnv(env); resolves with the result whatever the exit code. */
export function git(cwd: string, args: string[], env: NodeJS.ProcessEnv = {}, timeoutMs = 60_000): Promise<RunResult> {
  return run('git', args, { cwd, env: gitEnv(env), timeoutMs });
}

export function ok(r: RunResult, what: string): RunResult {
  assert.equal(r.code, 0, `${what} failed (code ${r.code})\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  return r;
}

export function failed(r: RunResult, what: string): RunResult {
  assert.notEqual(r.code, 0, `${what} should have failed\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  return r;
}

/** The commit a ref of a bare repository points at, or null when the ref does not exist. */
export async function refOf(bare: string, ref: string): Promise<string | null> {
  const r = await gitRun(bare, ['rev-parse', '--verify', '-q', ref]);
  return r.code === 0 ? r.stdout.trim() : null;
}

export async function headOf(workdir: string, rev = 'HEAD'): Promise<string> {
  return gitIn(workdir, ['rev-parse', rev]);
}

export async function parentsOf(repo: string, commit: string): Promise<string[]> {
  return (await gitIn(repo, ['rev-list', '--parents', '-n', '1', commit])).split(' ').slice(1);
}

/** Commits `count` files of `bytesEach` random bytes (incompressible) in one commit; returns its id. */
export async function commitRandomFiles(workdir: string, prefix: string, count: number, bytesEach: number, message: string): Promise<string> {
  mkdirSync(join(workdir, prefix), { recursive: true });
  for (let i = 0; i < count; i++) writeFileSync(join(workdir, prefix, `blob-${i}.bin`), randomBytes(bytesEach));
  await gitIn(workdir, ['add', '--', prefix]);
  await gitIn(workdir, ['commit', '-q', '-m', message]);
  return gitIn(workdir, ['rev-parse', 'HEAD']);
}

/** Size in bytes of the pack git would send for `new` on top of `old` (non-thin, like the push's). */
export async function packSizeFor(repo: string, revs: string[]): Promise<number> {
  const r = await run('sh', ['-c', `git pack-objects --revs --stdout --delta-base-offset -q | wc -c`], {
    cwd: repo, env: gitEnv(), input: revs.join('\n') + '\n', timeoutMs: 60_000,
  });
  assert.equal(r.code, 0, r.stderr);
  return Number(r.stdout.trim());
}

/** A pre-receive hook on a bare repo that appends every push (commands, push options) to `logFile`. */
export function installPreReceiveLog(bare: string, logFile: string): void {
  const hook = join(bare, 'hooks', 'pre-receive');
  mkdirSync(join(bare, 'hooks'), { recursive: true });
  writeFileSync(hook, [
    '#!/bin/sh',
    `log='${logFile.replaceAll("'", "'\\''")}'`,
    'echo "push options: ${GIT_PUSH_OPTION_COUNT:-none}" >> "$log"',
    'i=0',
    'while [ "$i" -lt "${GIT_PUSH_OPTION_COUNT:-0}" ]; do eval "echo \\"option: \\$GIT_PUSH_OPTION_$i\\"" >> "$log"; i=$((i+1)); done',
    'while read old new ref; do echo "update: $ref $old $new" >> "$log"; done',
    'exit 0',
    '',
  ].join('\n'), { mode: 0o755 });
}
