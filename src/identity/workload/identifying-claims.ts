// Whose tokens a trust policy admits. A shared issuer (GitHub Actions, gitlab.com) signs tokens
// for every job of every repository on its platform; conditions such as `ref: refs/heads/main`
// or `event_name: push` hold for all of them. So each policy must pin the claims that say whose
// job it is — the issuer kind's identifying claims — or the configuration is refused at load.
import { patternSegments, pinsLeadingSegments } from './claim-pattern.ts';

export type IssuerKind = 'github' | 'gitlab' | 'generic';
export const ISSUER_KINDS: readonly IssuerKind[] = ['github', 'gitlab', 'generic'];

const GITHUB_ISSUER = 'token.actions.githubusercontent.com';

/** GitHub.com's issuer (also with an enterprise's custom path), GHES issuers (…/_services/token), gitlab.com. */
export function inferIssuerKind(issuer: string): IssuerKind {
  const url = new URL(issuer);
  if (url.hostname === GITHUB_ISSUER || /\/_services\/token\/?$/.test(url.pathname)) return 'github';
  if (url.hostname === 'gitlab.com') return 'gitlab';
  return 'generic';
}

/** An issuer whose kind is known for certain: a policy may not call it something else. */
export function fixedIssuerKind(issuer: string): IssuerKind | undefined {
  const host = new URL(issuer).hostname;
  if (host === GITHUB_ISSUER) return 'github';
  if (host === 'gitlab.com') return 'gitlab';
  return undefined;
}

interface PinRule {
  /** How many leading segments must be written out; 'exact': no wildcard at all. */
  segments: number | 'exact';
  separators: string;
  /** What pinning means for this claim, for the refusal. */
  means: string;
  /** For sub: which first segments (the claim a sub starts with) identify the job. */
  firstSegment?: readonly string[];
}

const exact = (means: string): PinRule => ({ segments: 'exact', separators: '/', means });

const RULES: Record<Exclude<IssuerKind, 'generic'>, { platform: string; claims: Record<string, PinRule>; hint: string }> = {
  github: {
    platform: 'GitHub',
    hint: 'repository_owner_id, repository_id, repository_owner or repository (OWNER/REPO), or sub "repo:OWNER/REPO…"',
    claims: {
      repository_owner_id: exact('the owner\'s id written out'),
      repository_id: exact('the repository\'s id written out'),
      repository_owner: exact('the owner written out, no wildcard'),
      repository: { segments: 1, separators: '/', means: 'OWNER/REPO with the owner written out (REPO may be a wildcard)' },
      sub: {
        segments: 2, separators: ':/', firstSegment: ['repo', 'repository_owner', 'repository_owner_id', 'repository_id'],
        means: '"repo:OWNER/…" with OWNER written out; a customised sub may start with repository_owner_id:ID, repository_id:ID or repository_owner:OWNER instead',
      },
    },
  },
  gitlab: {
    platform: 'GitLab',
    hint: 'project_id, namespace_id, project_path or namespace_path (GROUP/…), or sub "project_path:GROUP/…"',
    claims: {
      project_id: exact('the project\'s id written out'),
      namespace_id: exact('the namespace\'s id written out'),
      project_path: { segments: 1, separators: '/', means: 'GROUP/… with the top-level group written out' },
      namespace_path: { segments: 1, separators: '/', means: 'GROUP or GROUP/… with the top-level group written out' },
      sub: { segments: 2, separators: ':/', firstSegment: ['project_path'], means: '"project_path:GROUP/…" with the top-level group written out' },
    },
  },
};

/** For generic issuers: a sub is pinned when its first two segments ("organization:acme:…", "org/ID/…") are written out. */
const GENERIC_SUB: PinRule = { segments: 2, separators: ':/', means: 'its first two segments written out, e.g. "organization:acme:…"' };
const GENERIC_DECLARED = (claim: string): PinRule => (claim === 'sub' ? GENERIC_SUB : { segments: 1, separators: '/', means: 'its first segment written out, no wildcard before the first /' });

function pins(pattern: string, rule: PinRule): boolean {
  if (rule.segments === 'exact') return pattern !== '' && !pattern.includes('*');
  if (!pinsLeadingSegments(pattern, rule.segments, rule.separators)) return false;
  // An exact sub is one job's; a glob must start with a claim that names whose job it is.
  return !pattern.includes('*') || !rule.firstSegment || rule.firstSegment.includes(patternSegments(pattern, rule.separators)[0]);
}

const show = (s: string): string => JSON.stringify(s);

/** Why a condition on an identifying claim does not pin it, or null when every pattern does. */
function unpinned(claim: string, patterns: string[], rule: PinRule): string | null {
  const loose = patterns.filter((p) => !pins(p, rule));
  if (!loose.length) return null;
  return `claims.${claim} ${loose.map(show).join(', ')} pins nothing: it needs ${rule.means}`;
}

export interface PolicyPins {
  kind: IssuerKind;
  claims: Record<string, string[]>;
  /** Generic issuers: the claims the operator named as saying whose token it is. */
  identifyingClaims?: string[];
}

/**
 * Null when the policy pins whose tokens it admits; otherwise the reason, for the load error.
 * GitHub and GitLab: at least one identifying claim whose every pattern is pinned (the other
 * conditions narrow it further, since every condition must match). Generic issuers: every claim
 * of `identifyingClaims` is conditioned and pinned, or, without that list, sub is.
 */
export function whyNotPinned(p: PolicyPins): string | null {
  const present = Object.keys(p.claims);
  if (p.kind === 'generic') {
    if (p.identifyingClaims?.length) {
      const problems = p.identifyingClaims.map((claim) => (Object.hasOwn(p.claims, claim) ? unpinned(claim, p.claims[claim], GENERIC_DECLARED(claim)) : `identifying claim ${claim} has no condition in claims`));
      const bad = problems.filter((x): x is string => x !== null);
      return bad.length ? `does not pin its identifying claims: ${bad.join('; ')}` : null;
    }
    if (!Object.hasOwn(p.claims, 'sub')) {
      return `has a generic issuer (kind: generic; a GitHub Enterprise Server or self-managed GitLab issuer needs kind: github or kind: gitlab) and no identifying_claims: name the claims that say whose token it is in identifying_claims `
        + `(each pinned in claims), or pin sub (its first two segments written out); ${present.length ? present.join(', ') : 'no condition'} alone could match anyone's token`;
    }
    const why = unpinned('sub', p.claims.sub, GENERIC_SUB);
    return why ? `has a generic issuer (kind: generic) and no identifying_claims, and ${why}` : null;
  }
  const { platform, claims: rules, hint } = RULES[p.kind];
  // Own keys only: a claim named "constructor" is no rule.
  const tried = present.filter((c) => Object.hasOwn(rules, c));
  const problems: string[] = [];
  for (const claim of tried) {
    const why = unpinned(claim, p.claims[claim], rules[claim]);
    if (!why) return null;
    problems.push(why);
  }
  const others = present.filter((c) => !Object.hasOwn(rules, c));
  const otherText = others.length ? `; ${others.join(', ')} ${others.length === 1 ? 'holds' : 'hold'} for jobs of every ${platform} ${p.kind === 'github' ? 'repository' : 'project'} as well` : '';
  return `would admit tokens of every ${p.kind === 'github' ? 'repository' : 'project'} on ${platform}: it pins none of the claims that say whose job it is `
    + `(${hint})${problems.length ? `; ${problems.join('; ')}` : ''}${otherText}`;
}
