// The auth_limit section of gatehouse.yaml and its GATEHOUSE_AUTH_* environment variables
// (environment wins): how many failed sign-ins one address may make, and how refusals are recorded.
import { DEFAULT_AUTH_LIMITS, type AuthLimits } from './auth-throttle.ts';

export function defaultAuthLimits(): AuthLimits {
  return { ...DEFAULT_AUTH_LIMITS };
}

const FIELDS: Array<[keyof AuthLimits, string, string]> = [
  ['maxFailures', 'max_failures', 'GATEHOUSE_AUTH_MAX_FAILURES'],
  ['windowMs', 'window_ms', 'GATEHOUSE_AUTH_WINDOW_MS'],
  ['lockoutMs', 'lockout_ms', 'GATEHOUSE_AUTH_LOCKOUT_MS'],
  ['recordedPerWindow', 'recorded_per_window', 'GATEHOUSE_AUTH_RECORDED_PER_WINDOW'],
  ['maxSources', 'max_sources', 'GATEHOUSE_AUTH_MAX_SOURCES'],
];

function count(v: unknown, name: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new Error(`config: ${name} must be a non-negative whole number`);
  return n;
}

function flag(v: unknown): boolean {
  return v === true || /^(1|true|on|yes)$/i.test(String(v));
}

/** Applies the file's section (auth_limit:) and then the environment to `limits`. */
export function applyAuthLimits(limits: AuthLimits, section: unknown, env: NodeJS.ProcessEnv): void {
  const doc = (section ?? {}) as Record<string, unknown>;
  for (const [key, yaml] of FIELDS) {
    if (doc[yaml] !== undefined) (limits[key] as number) = count(doc[yaml], `auth_limit.${yaml}`);
  }
  if (doc.exempt_loopback !== undefined) limits.exemptLoopback = flag(doc.exempt_loopback);
  for (const [key, , name] of FIELDS) {
    if (env[name]) (limits[key] as number) = count(env[name], name);
  }
  if (env.GATEHOUSE_AUTH_EXEMPT_LOOPBACK) limits.exemptLoopback = flag(env.GATEHOUSE_AUTH_EXEMPT_LOOPBACK);
  if (limits.maxFailures > 0 && (limits.windowMs < 1000 || limits.lockoutMs < 1000)) {
    throw new Error('config: auth_limit.window_ms and auth_limit.lockout_ms must be at least 1000');
  }
  if (limits.maxSources < 1) throw new Error('config: auth_limit.max_sources must be at least 1');
}
