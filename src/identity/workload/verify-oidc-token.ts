// Verifies an OIDC ID token (a JWT) from a trusted issuer. The header's algorithm is checked
// against an allow-list of asymmetric algorithms before any key is looked at: "none" and the HMAC
// family never get as far as a key, which rules out unsigned tokens and tokens "signed" with the
// issuer's public key used as an HMAC secret. Then the issuer must be one the configuration names
// exactly, the signature must verify with one of its published keys, and exp/nbf/iat must hold
// (with a small clock skew): a token without iat, or issued in the future, is refused, since a
// clock that runs ahead at the issuer would otherwise stretch a token's life past what it says. Audience and claims are the trust policies' business.
import { decodeJwt, decodeProtectedHeader, errors, jwtVerify, type CryptoKey, type JWSHeaderParameters, type JWTPayload } from 'jose';
import { WorkloadRefusal } from './errors.ts';

export const ALLOWED_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'EdDSA'];

/** ID tokens are a few kilobytes; this bounds the work a caller can ask for. */
export const MAX_TOKEN_LENGTH = 16 * 1024;

export interface KeySource {
  keysFor(issuer: string, header: JWSHeaderParameters): Promise<CryptoKey[]>;
}

export interface VerifiedOidcToken {
  issuer: string;
  audiences: string[];
  payload: JWTPayload;
  /** ms since the epoch */
  expiresAt: number;
}

export interface VerifyOptions {
  issuers: ReadonlySet<string>;
  keys: KeySource;
  clockSkewSeconds: number;
  now: () => number;
}

const iso = (seconds: unknown): string => (typeof seconds === 'number' && Number.isFinite(seconds) ? new Date(seconds * 1000).toISOString() : String(seconds));

export async function verifyOidcToken(token: string, opts: VerifyOptions): Promise<VerifiedOidcToken> {
  if (token.length > MAX_TOKEN_LENGTH) throw new WorkloadRefusal(`the token is longer than ${MAX_TOKEN_LENGTH} characters`);
  const parts = token.split('.');
  if (parts.length === 5) throw new WorkloadRefusal('encrypted tokens (JWE) are not accepted');
  if (parts.length !== 3) throw new WorkloadRefusal('not a JWT (expected three dot-separated parts)');
  let header: JWSHeaderParameters;
  let unverified: JWTPayload;
  try {
    header = decodeProtectedHeader(token) as JWSHeaderParameters;
    unverified = decodeJwt(token);
  } catch (err) {
    throw new WorkloadRefusal(`malformed token: ${(err as Error).message}`);
  }

  const alg = header.alg;
  if (typeof alg !== 'string' || alg === '') throw new WorkloadRefusal('the token header names no algorithm');
  if (alg.toLowerCase() === 'none') throw new WorkloadRefusal('algorithm "none" is not allowed');
  if (/^HS\d+$/i.test(alg)) throw new WorkloadRefusal(`algorithm ${alg} is not allowed (symmetric algorithms are never accepted)`);
  if (!ALLOWED_ALGORITHMS.includes(alg)) throw new WorkloadRefusal(`algorithm "${alg}" is not allowed (accepted: ${ALLOWED_ALGORITHMS.join(', ')})`);

  // The unverified issuer only picks whose keys to try; the signature then vouches for it.
  const issuer = unverified.iss;
  if (typeof issuer !== 'string' || issuer === '') throw new WorkloadRefusal('the token names no issuer (iss)');
  if (!opts.issuers.has(issuer)) throw new WorkloadRefusal(`issuer "${issuer}" is not trusted`);

  const keys = await opts.keys.keysFor(issuer, header);
  let payload: JWTPayload | undefined;
  let failure: unknown;
  for (const key of keys) {
    try {
      ({ payload } = await jwtVerify(token, key, {
        algorithms: ALLOWED_ALGORITHMS, issuer, requiredClaims: ['exp', 'iat'], clockTolerance: opts.clockSkewSeconds, currentDate: new Date(opts.now()),
      }));
      break;
    } catch (err) {
      failure = err;
      // Only a signature that fails with this key is worth trying the next one for.
      if (!(err instanceof errors.JWSSignatureVerificationFailed)) break;
    }
  }
  if (!payload) throw explain(failure);
  const iat = payload.iat;
  if (typeof iat !== 'number' || !Number.isFinite(iat)) throw new WorkloadRefusal('the token has no valid issue time (iat)');
  if (iat > opts.now() / 1000 + opts.clockSkewSeconds) throw new WorkloadRefusal(`token issued in the future (iat ${iso(iat)})`);
  const aud = payload.aud;
  return { issuer, audiences: typeof aud === 'string' ? [aud] : Array.isArray(aud) ? aud.filter((a) => typeof a === 'string') : [], payload, expiresAt: Number(payload.exp) * 1000 };
}

/** jose's errors, reworded for the person whose CI job was refused. */
function explain(err: unknown): WorkloadRefusal {
  if (err instanceof WorkloadRefusal) return err;
  if (err instanceof errors.JWTExpired) return new WorkloadRefusal(`token expired at ${iso(err.payload.exp)}`);
  if (err instanceof errors.JWTClaimValidationFailed) {
    if (err.claim === 'nbf' && err.reason === 'check_failed') return new WorkloadRefusal(`token not valid before ${iso(err.payload.nbf)}`);
    if (err.claim === 'exp' && err.reason === 'missing') return new WorkloadRefusal('the token has no expiry (exp)');
    if (err.claim === 'iat') return new WorkloadRefusal('the token has no valid issue time (iat)');
    return new WorkloadRefusal(`invalid ${err.claim} claim: ${err.message}`);
  }
  if (err instanceof errors.JWSSignatureVerificationFailed) return new WorkloadRefusal('signature verification failed');
  if (err instanceof errors.JOSEError) return new WorkloadRefusal(`malformed token: ${err.message}`);
  return new WorkloadRefusal(`the token could not be verified: ${(err as Error).message}`);
}
