// Which trust policy a verified token falls under: same issuer, the policy's audience among the
// token's, and every claim condition met. The first policy in configuration order that matches
// wins; when none does, the refusal says for each policy what did not match.
import type { TrustPolicy } from './config.ts';
import type { VerifiedOidcToken } from './verify-oidc-token.ts';
import { claimSeparators, matchesClaimPattern } from './claim-pattern.ts';

export type PolicyDecision = { ok: true; policy: TrustPolicy } | { ok: false; reason: string };

/** Claim patterns (exact, `*` within a segment, `**` across; `sub` is segmented at `:` and `/`): claim-pattern.ts. */
export { matchesClaimPattern } from './claim-pattern.ts';

/** A claim as text for matching; objects and arrays never match a condition. */
export function claimText(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  return undefined;
}

// JSON quoting: a claim is the issuer's text and may hold control characters; a person reads this.
const quote = (x: string): string => JSON.stringify(x);
const quoteList = (xs: string[]): string => (xs.length === 1 ? quote(xs[0]) : `one of ${xs.map(quote).join(', ')}`);

/** Why `policy` does not accept the token (audience first, then each failing claim), or null when it does. */
function mismatch(policy: TrustPolicy, token: VerifiedOidcToken): { audience: boolean; text: string } | null {
  if (!token.audiences.includes(policy.audience)) {
    return { audience: true, text: `audience ${quoteList(token.audiences.length ? token.audiences : [''])} is not accepted (expected "${policy.audience}")` };
  }
  const failed: string[] = [];
  for (const [claim, patterns] of Object.entries(policy.claims)) {
    const value = claimText(token.payload[claim]);
    if (value === undefined) failed.push(token.payload[claim] === undefined ? `claim ${claim} is missing, expected ${quoteList(patterns)}` : `claim ${claim} is not a string, expected ${quoteList(patterns)}`);
    else if (!patterns.some((p) => matchesClaimPattern(value, p, claimSeparators(claim)))) failed.push(`claim ${claim} is ${quote(value)}, expected ${quoteList(patterns)}`);
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
    const aud = (token.audiences.length ? token.audiences : ['']).map(quote).join(', ');
    return { ok: false, reason: `audience ${aud} is not accepted by ${misses.map((m) => `policy "${m.policy.name}"`).join(' or ')}` };
  }
  return { ok: false, reason: `no trust policy matches: ${misses.map((m) => `policy "${m.policy.name}": ${m.text}`).join('; ')}` };
}
