import { createHash, randomBytes } from 'node:crypto';

export const TOKEN_PREFIX = 'ght_';

/** 256 bits of randomness; the prefix lets secret scanners recognise leaked Gatehouse tokens. */
export function generateToken(): string {
  return TOKEN_PREFIX + randomBytes(32).toString('base64url');
}

/**
 * Tokens are stored only as SHA-256 digests. A fast hash is sound here because the input has
 * 256 bits of entropy (no dictionary to attack), and it keeps per-connection auth cheap.
 */
export function hashToken(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}

export function looksLikeToken(text: string): boolean {
  return text.startsWith(TOKEN_PREFIX) && text.length >= TOKEN_PREFIX.length + 40;
}
