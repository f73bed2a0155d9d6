// How much a guarded push may make the gateway hold: the `git:` section of gatehouse.yaml and
// GATEHOUSE_GIT_* environment variables (environment wins). See docs/git-push-protection.md.
import os from 'node:os';
import path from 'node:path';

export interface PushLimits {
  /**
   * Largest push (commands and pack) held for inspection before a protected ref may move; also
   * the most bytes a Git HTTP request body may inflate to. A larger push is refused with a message
   * git prints.
   */
  maxPushBytes: number;
  /** Where held pushes are spooled (a directory only the gateway reads; files are removed after use). */
  spoolDir: string;
}

export const DEFAULT_MAX_PUSH_BYTES = 2 * 1024 ** 3;

/**
 * The defaults (2 GiB, spooled in <dataDir>/spool, or under the system's temp directory without
 * one), with the environment applied: what an engine uses when it is given no limits.
 */
export function defaultPushLimits(dataDir?: string, env: NodeJS.ProcessEnv = process.env): PushLimits {
  const limits = { maxPushBytes: DEFAULT_MAX_PUSH_BYTES, spoolDir: dataDir ? path.join(dataDir, 'spool') : path.join(os.tmpdir(), 'gatehouse-spool') };
  applyPushLimits(limits, undefined, env);
  return limits;
}

const UNITS: Record<string, number> = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 };

/** "2147483648", "512MiB", "2G", "64 kb" → bytes (binary units). */
export function parseByteSize(v: unknown, name: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$/i.exec(String(v));
  const n = m ? Math.floor(Number(m[1]) * UNITS[m[2].toLowerCase()]) : NaN;
  if (!Number.isSafeInteger(n) || n < 1) throw new Error(`config: ${name} must be a positive size in bytes (e.g. 2147483648 or 2GiB)`);
  return n;
}

/** Applies the file's `git:` section, then the environment, to `limits`. */
export function applyPushLimits(limits: PushLimits, section: unknown, env: NodeJS.ProcessEnv, base = process.cwd()): void {
  const doc = (section ?? {}) as Record<string, unknown>;
  if (doc.max_push_bytes !== undefined) limits.maxPushBytes = parseByteSize(doc.max_push_bytes, 'git.max_push_bytes');
  if (doc.spool_dir !== undefined) limits.spoolDir = path.resolve(base, String(doc.spool_dir));
  if (env.GATEHOUSE_GIT_MAX_PUSH_BYTES) limits.maxPushBytes = parseByteSize(env.GATEHOUSE_GIT_MAX_PUSH_BYTES, 'GATEHOUSE_GIT_MAX_PUSH_BYTES');
  if (env.GATEHOUSE_GIT_SPOOL_DIR) limits.spoolDir = path.resolve(env.GATEHOUSE_GIT_SPOOL_DIR);
}
