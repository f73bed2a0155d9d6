// Which trust policy a verified token falls under: same issuer, the policy's audience among the
// token's, and every claim condition met. The first policy in configuration order that matches
// wins; when none does, the refusal says for each policy what did not match.
import type { TrustPolicy } from './config.ts';
import type { VerifiedOidcToken } from './verify-oidc-token.ts';

export type PolicyDecision = { ok: true; policy: TrustPolicy } | { ok: false; reason: string };

const compiled = new Map<string, RegExp>();

/**
 * Claim patterns: exact text, or globs where `*` matches within one `/`-separated segment and
 * `**` across segments — so `org/*` is every repository of org, and `refs/heads/*` is a branch
 * without a slash while `refs/heads/**` is any branch.
 */
export function matchesClaimPattern(value: string, pattern: string): boolean {
  if (!pattern.includes('*')) return value === pattern;
  let re = compiled.get(pattern);
  if (!re) {
    const src = pattern.split(/(\*\*|\*)/).map((part) => (part === '**' ? '.*' : part === '*' ? '[^/]*' : part.replace(/[\\^$.|?+()[\]{}]/g, '\\$&'))).join('');
    re = new RegExp(`^${src}$`, 's');
    compiled.set(pattern, re);
  }
  return re.test(value);
}

/** A claim as text for matching; objects and arrays never match a condition. */
export function claimText(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  return undefined;
}

const quoteList = (xs: string[]): string => (xs.length === 1 ? `"${xs[0]}"` : `one of ${xs.map((x) => `"${x}"`).join(', ')}`);

/** Why `policy` does not accept the token (audience first, then each failing claim), or null when it does. */
function mismatch(policy: TrustPolicy, token: VerifiedOidcToken): { audience: boolean; text: string } | null {
  if (!token.audiences.includes(policy.audience)) {
    return { audience: true, text: `audience ${quoteList(token.audiences.length ? token.audiences : [''])} is not accepted (expected "${policy.audience}")` };
  }
  const failed: string[] = [];
  for (const [claim, patterns] of Object.entries(policy.claims)) {
    const value = claimText(token.payload[claim]);
    if (value === undefined) failed.push(token.payload[claim] === undefined ? `claim ${claim} is missing, expected ${quoteList(patterns)}` : `claim ${claim} is not a string, expected ${quoteList(patterns)}`);
    else if (!patterns.some((p) => matchesClaimPattern(value, p))) failed.push(`claim ${claim} is "${value}", expected ${quoteList(patterns)}`);
  }
  return failed.length ? { audience: false, text: failed.join(', ') } : null;
}

export function choosePolicy(policies: TrustPolicy[], token: VerifiedOidcToken): PolicyDecision {
  const candidates = policies.filter((p) => p.issuer === token.issuer);
  const misses: Array<{ policy: TrustPolicy; audience: boolean; text: string }> = [];
  for (const policy of candidates) {
    const miss = mismatch(policy, token);
    if (!miss) return { ok: true, policy };
    misses.push({ policy, ...miss });
  }
  if (misses.length > 0 && misses.every((m) => m.audience)) {
    const aud = token.audiences.length ? token.audiences.join('", "') : '';
    return { ok: false, reason: `audience "${aud}" is not accepted by ${misses.map((m) => `policy "${m.policy.name}"`).join(' or ')}` };
  }
  return { ok: false, reason: `no trust policy matches: ${misses.map((m) => `policy "${m.policy.name}": ${m.text}`).join('; ')}` };
}
