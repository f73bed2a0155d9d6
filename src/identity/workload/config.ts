// The `workload_identity` block of gatehouse.yaml: which OIDC issuers the gateway trusts, and on
// which claims, to turn a CI job's or an agent run's token into a short-lived gatehouse token.
import { parseDuration } from '../../util/duration.ts';
import { CLAIM_NAME } from '../../store/types.ts';
import { fixedIssuerKind, inferIssuerKind, ISSUER_KINDS, whyNotPinned, type IssuerKind } from './identifying-claims.ts';

export interface TrustPolicy {
  name: string;
  /** Compared exactly with the token's `iss`. */
  issuer: string;
  /** Which claims say whose token it is (identifying-claims.ts): from `kind`, or inferred from the issuer. */
  kind: IssuerKind;
  /** Generic issuers: the claims the policy must pin (`identifying_claims`). */
  identifyingClaims?: string[];
  /** Must be one of the token's `aud` values. */
  audience: string;
  /** Where the issuer's keys are; absent: OIDC discovery, then issuer + /.well-known/jwks. */
  jwksUrl?: string;
  /** Claim → accepted patterns (any one may match); every claim listed must match. */
  claims: Record<string, string[]>;
  /** Connections the run identity may connect to. */
  grants: string[];
  /** The run identity's external groups: grants to groups of these names apply to it. */
  groups: string[];
  maxTtlSeconds: number;
  /** e.g. "gh-{repository}-{run_id}-{run_attempt}"; a random suffix is always appended. */
  identityName?: string;
}

export interface WorkloadIdentityConfig {
  policies: TrustPolicy[];
  clockSkewSeconds: number;
  /** An unknown key id refetches the issuer's JWKS at most this often (key rotation without a fetch storm). */
  jwksRefetchIntervalSeconds: number;
  /** Keys are refetched at least this often even when every key id is known. */
  jwksMaxAgeSeconds: number;
  jwksTimeoutMs: number;
  /** Say which claim failed which policy in refusals (true), or only that no policy matched. */
  explainRefusals: boolean;
}

export function defaultWorkloadIdentityConfig(): WorkloadIdentityConfig {
  return { policies: [], clockSkewSeconds: 30, jwksRefetchIntervalSeconds: 30, jwksMaxAgeSeconds: 3600, jwksTimeoutMs: 5000, explainRefusals: true };
}

/** Gatehouse tokens from an exchange live at most this long whatever a policy says. */
export const MAX_EXCHANGE_TTL_S = 12 * 3600;

const POLICY_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
const LOOPBACK = /^(localhost|127(\.\d{1,3}){3}|\[::1\])$/i;

/** https, or http on a loopback address (a local issuer, for tests and development). */
export function checkIssuerUrl(text: string, what: string): string {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new Error(`${what} "${text}" is not a URL`);
  }
  if (url.protocol !== 'https:' && !(url.protocol === 'http:' && LOOPBACK.test(url.hostname))) {
    throw new Error(`${what} "${text}" must be an https:// URL (http:// only on a loopback address)`);
  }
  if (url.username || url.password || url.hash) throw new Error(`${what} "${text}" may not carry credentials or a fragment`);
  return text;
}

type Yaml = Record<string, unknown>;

function stringList(v: unknown, what: string): string[] {
  if (v === undefined || v === null) return [];
  const items = Array.isArray(v) ? v : [v];
  return items.map((x) => {
    if (typeof x !== 'string' && typeof x !== 'number' && typeof x !== 'boolean') throw new Error(`${what} must be a string or a list of strings`);
    return String(x);
  });
}

function parsePolicy(raw: unknown, index: number): TrustPolicy {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new Error(`workload_identity.policies[${index}] must be a mapping`);
  const p = raw as Yaml;
  const name = String(p.name ?? '');
  const at = `workload_identity.policies[${index}]${name ? ` (${JSON.stringify(name)})` : ''}`;
  const known = new Set(['name', 'issuer', 'kind', 'identifying_claims', 'audience', 'jwks_url', 'claims', 'grants', 'groups', 'max_ttl', 'identity_name']);
  for (const key of Object.keys(p)) if (!known.has(key)) throw new Error(`${at}: unknown setting "${key}"`);
  if (!POLICY_NAME.test(name)) throw new Error(`${at}: name is required (letters, digits, . _ -)`);
  if (typeof p.issuer !== 'string') throw new Error(`${at}: issuer is required`);
  const issuer = checkIssuerUrl(p.issuer, `${at}: issuer`);
  if (typeof p.audience !== 'string' || p.audience === '') throw new Error(`${at}: audience is required`);
  const jwksUrl = p.jwks_url === undefined || p.jwks_url === null ? undefined : checkIssuerUrl(String(p.jwks_url), `${at}: jwks_url`);

  if (typeof p.claims !== 'object' || p.claims === null || Array.isArray(p.claims)) throw new Error(`${at}: claims (the conditions a token must meet) are required`);
  const claims: Record<string, string[]> = {};
  for (const [claim, value] of Object.entries(p.claims as Yaml)) {
    // __proto__ would set the object's prototype instead of a condition, and the condition would be lost.
    if (!CLAIM_NAME.test(claim) || claim === '__proto__') throw new Error(`${at}: claim name ${JSON.stringify(claim)} is not allowed`);
    const patterns = stringList(value, `${at}: claims.${claim}`);
    if (patterns.length === 0) throw new Error(`${at}: claims.${claim} names no value`);
    claims[claim] = patterns;
  }
  const { kind, identifyingClaims } = parseIssuerKind(p, issuer, at);
  // A shared issuer (GitHub, gitlab.com) signs tokens for everyone's jobs: a policy must pin
  // whose jobs it means, or every repository on the platform could sign in.
  const weak = whyNotPinned({ kind, claims, identifyingClaims });
  if (weak) throw new Error(`${at}: ${weak}`);

  let maxTtlSeconds = 15 * 60;
  if (p.max_ttl !== undefined) maxTtlSeconds = parseDuration(String(p.max_ttl), MAX_EXCHANGE_TTL_S);
  const identityName = p.identity_name === undefined ? undefined : String(p.identity_name);
  if (identityName !== undefined && /\{(?![A-Za-z0-9_.:-]+\})/.test(identityName)) throw new Error(`${at}: identity_name placeholders are {claim} (claim names only)`);
  return {
    name, issuer, kind, ...(identifyingClaims ? { identifyingClaims } : {}), audience: p.audience, jwksUrl, claims, maxTtlSeconds, identityName,
    grants: stringList(p.grants, `${at}: grants`), groups: stringList(p.groups, `${at}: groups`),
  };
}

/** `kind` (default: inferred from the issuer URL) and, for generic issuers only, `identifying_claims`. */
function parseIssuerKind(p: Yaml, issuer: string, at: string): { kind: IssuerKind; identifyingClaims?: string[] } {
  let kind = inferIssuerKind(issuer);
  if (p.kind !== undefined) {
    if (!ISSUER_KINDS.includes(p.kind as IssuerKind)) throw new Error(`${at}: kind must be one of ${ISSUER_KINDS.join(', ')}`);
    kind = p.kind as IssuerKind;
    // gitlab.com's or GitHub's issuer is what it is: calling it generic would loosen the check.
    const fixed = fixedIssuerKind(issuer);
    if (fixed && fixed !== kind) throw new Error(`${at}: issuer "${issuer}" is ${fixed === 'github' ? 'GitHub' : 'GitLab'}'s: kind must be ${fixed}`);
  }
  if (p.identifying_claims === undefined) return { kind };
  if (kind !== 'generic') throw new Error(`${at}: identifying_claims is for kind: generic only (the identifying claims of a ${kind} issuer are fixed; docs/workload-identity.md)`);
  const identifyingClaims = stringList(p.identifying_claims, `${at}: identifying_claims`);
  if (!identifyingClaims.length) throw new Error(`${at}: identifying_claims names no claim`);
  for (const claim of identifyingClaims) if (!CLAIM_NAME.test(claim) || claim === '__proto__') throw new Error(`${at}: identifying claim name ${JSON.stringify(claim)} is not allowed`);
  return { kind, identifyingClaims };
}

/** Parses and checks the YAML block; throws with the offending setting named. */
export function parseWorkloadIdentity(raw: unknown): WorkloadIdentityConfig {
  const cfg = defaultWorkloadIdentityConfig();
  if (raw === undefined || raw === null) return cfg;
  if (typeof raw !== 'object' || Array.isArray(raw)) throw new Error('workload_identity must be a mapping');
  const doc = raw as Yaml;
  if (doc.clock_skew !== undefined) cfg.clockSkewSeconds = parseDuration(String(doc.clock_skew), 300);
  if (doc.jwks_refetch_interval !== undefined) cfg.jwksRefetchIntervalSeconds = parseDuration(String(doc.jwks_refetch_interval), 3600);
  if (doc.jwks_max_age !== undefined) cfg.jwksMaxAgeSeconds = parseDuration(String(doc.jwks_max_age), 7 * 86400);
  if (doc.jwks_timeout_ms !== undefined) {
    const ms = Number(doc.jwks_timeout_ms);
    if (!Number.isInteger(ms) || ms < 100 || ms > 60_000) throw new Error('workload_identity.jwks_timeout_ms must be 100 to 60000');
    cfg.jwksTimeoutMs = ms;
  }
  if (doc.explain_refusals !== undefined) cfg.explainRefusals = doc.explain_refusals !== false && doc.explain_refusals !== 'false';
  if (doc.policies !== undefined && !Array.isArray(doc.policies)) throw new Error('workload_identity.policies must be a list');
  cfg.policies = ((doc.policies as unknown[] | undefined) ?? []).map(parsePolicy);
  const names = new Set<string>();
  const jwksOf = new Map<string, string | undefined>();
  for (const p of cfg.policies) {
    if (names.has(p.name)) throw new Error(`workload_identity: two policies are named "${p.name}"`);
    names.add(p.name);
    // One key set per issuer: policies of the same issuer must agree on where it is.
    if (jwksOf.has(p.issuer) && jwksOf.get(p.issuer) !== p.jwksUrl) throw new Error(`workload_identity: policies of issuer "${p.issuer}" name different jwks_url values`);
    jwksOf.set(p.issuer, p.jwksUrl);
  }
  return cfg;
}
