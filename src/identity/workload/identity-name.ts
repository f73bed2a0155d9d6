// Names for run identities: a readable part from the policy's template and the token's claims,
// then a random suffix, so that every exchange is an identity of its own even for the same run.
import { randomBytes } from 'node:crypto';

const MAX_NAME = 63;
const SUFFIX_ALPHABET = 'abcdefghijklmnopqrstuvwxyz0123456789';

export function randomSuffix(length = 6): string {
  return [...randomBytes(length)].map((b) => SUFFIX_ALPHABET[b % SUFFIX_ALPHABET.length]).join('');
}

/**
 * "gh-{repository}-{run_id}" with repository=org/app, run_id=42 → "gh-org-app-42-k3x9qa". `{policy}`
 * is the policy's name; a claim the token lacks renders empty. Characters an identity name may not
 * hold become "-", and the readable part is cut so the whole fits in 63 characters.
 */
export function runIdentityName(template: string | undefined, policy: string, claims: Record<string, string>, suffix: string): string {
  const rendered = (template ?? '{policy}').replace(/\{([A-Za-z0-9_.:-]+)\}/g, (_, name: string) => (name === 'policy' ? policy : claims[name] ?? ''));
  let base = rendered.replace(/[^A-Za-z0-9._@-]+/g, '-').replace(/-{2,}/g, '-').replace(/^[^A-Za-z0-9]+/, '');
  base = base.slice(0, MAX_NAME - 1 - suffix.length).replace(/[-._@]+$/, '');
  return `${base || 'run'}-${suffix}`;
}
