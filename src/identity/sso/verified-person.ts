// What an identity provider vouched for, once its answer was checked: the same shape for OIDC and
// SAML, so that one module turns it into a gatehouse identity.
import type { IdentityClaims } from '../../store/types.ts';
import { CLAIM_NAME, GROUP_NAME } from '../../store/types.ts';
import { SignInRefusal } from './errors.ts';

export interface VerifiedPerson {
  /** Issuer and subject at the provider ("oidc:<iss>#<sub>", "saml:<idp entity id>#<NameID>"): which identity this is. */
  externalKey: string;
  /** What the username claim or attribute said (made into the identity's name on first sign-in). */
  username: string;
  claims: IdentityClaims;
  groups: string[];
  /** "oidc:<provider>", "saml:<provider>". */
  authSource: string;
}

const MAX_CLAIMS = 100;
const MAX_CLAIM_LENGTH = 2048;
const MAX_GROUPS = 200;
/** Timing claims say nothing about who signed in. */
const NOT_RECORDED = new Set(['exp', 'iat', 'nbf', 'auth_time', 'at_hash', 'c_hash', 'nonce']);

/**
 * The claims an identity keeps: scalar values as text, lists of scalars as JSON text (groups show
 * in `sessions show` that way); names an identity's claims cannot hold, and long values, are left out.
 */
export function keptClaims(source: Record<string, unknown>): IdentityClaims {
  const out: IdentityClaims = {};
  for (const [name, value] of Object.entries(source)) {
    if (Object.keys(out).length >= MAX_CLAIMS) break;
    if (NOT_RECORDED.has(name) || !CLAIM_NAME.test(name)) continue;
    const text = typeof value === 'string' ? value
      : typeof value === 'number' || typeof value === 'boolean' ? String(value)
        : Array.isArray(value) && value.every((v) => ['string', 'number', 'boolean'].includes(typeof v)) ? JSON.stringify(value) : undefined;
    if (text !== undefined && text.length <= MAX_CLAIM_LENGTH) out[name] = text;
  }
  return out;
}

/** A groups claim or attribute: a list of names, or one name; names a group may not have are dropped. */
export function groupsFrom(value: unknown): string[] {
  if (value === undefined || value === null) return [];
  const items = Array.isArray(value) ? value : [value];
  const names = items.filter((v): v is string => typeof v === 'string' && GROUP_NAME.test(v));
  return [...new Set(names)].slice(0, MAX_GROUPS);
}

/** The username claim or attribute as text; refused when the provider did not send it. */
export function usernameFrom(value: unknown, what: string): string {
  const v = Array.isArray(value) && value.length === 1 ? value[0] : value;
  if (typeof v !== 'string' || v.trim() === '') throw new SignInRefusal(`the identity provider sent no ${what}, which names the identity`);
  return v.trim();
}
