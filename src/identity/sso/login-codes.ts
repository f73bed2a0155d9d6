// The secrets and codes of a sign-in in progress: the link's id, the poll token the CLI holds,
// and the short code a person compares (or types) in the browser.
import { randomBytes, randomInt } from 'node:crypto';
import { hashToken } from '../../crypto/tokens.ts';

/** Consonants only: no words, nothing to confuse (0/O, 1/I), as RFC 8628 suggests. */
const CODE_ALPHABET = 'BCDFGHJKLMNPQRSTVWXZ';

export function newLoginId(): string {
  return randomBytes(18).toString('base64url');
}

export function newPollToken(): { token: string; hash: string } {
  const token = `ghp_${randomBytes(32).toString('base64url')}`;
  return { token, hash: hashToken(token) };
}

/** The secret of one confirmation form (only its hash is stored). */
export function newConfirmSecret(): string {
  return randomBytes(24).toString('base64url');
}

/** "BDFH-KMPR": 8 letters of 20, about 34 bits; it lives for minutes and is single-use. */
export function newUserCode(): string {
  const letters = Array.from({ length: 8 }, () => CODE_ALPHABET[randomInt(CODE_ALPHABET.length)]);
  return `${letters.slice(0, 4).join('')}-${letters.slice(4).join('')}`;
}

/** What a person typed, as stored: case and separators do not matter. */
export function normalizeUserCode(typed: string): string | undefined {
  const letters = typed.toUpperCase().replace(/[\s-]/g, '');
  if (letters.length !== 8 || [...letters].some((c) => !CODE_ALPHABET.includes(c))) return undefined;
  return `${letters.slice(0, 4)}-${letters.slice(4)}`;
}
