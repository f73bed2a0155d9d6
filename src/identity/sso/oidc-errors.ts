// openid-client's errors as sentences a person can act on; errors not recognised keep the
// library's own words.
import { AuthorizationResponseError, ResponseBodyError } from 'openid-client';

/** Detail text of openid-client (and oauth4webapi under it) → what failed, in plain words. */
const CHECKS: Array<[RegExp, string]> = [
  [/"state" response parameter/, 'the answer from the identity provider does not belong to the sign-in started in this browser (state mismatch)'],
  [/"nonce" claim/, 'the ID token was not issued for this sign-in (nonce mismatch)'],
  [/JWT signature verification failed/, 'the ID token\'s signature does not verify with the identity provider\'s published keys'],
  [/selecting a JWT verification key/, 'the ID token is signed with a key the identity provider does not publish'],
  [/"iss" \(issuer\)|"issuer" property/, 'the ID token or the answer names another issuer than the configured one'],
  [/"aud" \(audience\)|"azp" \(authorized party\)/, 'the ID token was issued for another client (audience)'],
  [/"exp" \(expiration time\) claim value/, 'the ID token has expired'],
  [/"nbf" \(not before\) claim value/, 'the ID token is not valid yet'],
  [/"iat" \(issued at\) claim value/, 'the ID token was issued too long ago'],
  [/unexpected JWT "alg"/, 'the ID token is signed with an algorithm this client does not accept'],
];

export function describeOidcError(err: unknown): string {
  if (err instanceof AuthorizationResponseError) return `the identity provider refused the sign-in: ${err.error}${err.error_description ? ` (${err.error_description})` : ''}`;
  if (err instanceof ResponseBodyError) return `the identity provider refused the authorization code: ${err.error}${err.error_description ? ` (${err.error_description})` : ''}`;
  const e = err as Error & { cause?: unknown };
  const detail = e.cause instanceof Error ? e.cause.message : e.cause !== undefined ? String(e.cause) : '';
  for (const [pattern, sentence] of CHECKS) {
    if (pattern.test(detail) || pattern.test(e.message)) return sentence;
  }
  return detail && detail !== e.message ? `${e.message}: ${detail}` : e.message;
}
