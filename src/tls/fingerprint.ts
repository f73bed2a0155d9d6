// Certificate fingerprints as operators see and pin them: SHA-256 of the certificate's DER bytes,
// written "SHA256:<base64, no padding>" (the form ssh uses); the hex form openssl prints
// (`openssl x509 -noout -fingerprint -sha256`, with or without colons) is accepted too.
import { createHash, X509Certificate } from 'node:crypto';

/** The fingerprint of a certificate given as PEM or DER. */
export function certificateFingerprint(cert: string | Buffer): string {
  const der = typeof cert === 'string' ? new X509Certificate(cert).raw : cert;
  return formatFingerprint(createHash('sha256').update(der).digest());
}

export function formatFingerprint(digest: Buffer): string {
  return `SHA256:${digest.toString('base64').replace(/=+$/, '')}`;
}

/** The 32 digest bytes of a pinned fingerprint, or an error that shows the accepted forms. */
export function parseFingerprint(text: string): Buffer {
  const t = text.trim();
  const b64 = /^SHA256:([A-Za-z0-9+/]{43})=?$/i.exec(t);
  if (b64) return Buffer.from(b64[1], 'base64');
  const hex = /^(?:sha256(?:\s+fingerprint)?[:=]\s*)?((?:[0-9a-f]{2}:?){32})$/i.exec(t);
  if (hex) {
    const digits = hex[1].replaceAll(':', '');
    if (digits.length === 64) return Buffer.from(digits, 'hex');
  }
  throw new Error('a gateway fingerprint is SHA256:<43 base64 characters> (printed by `gatehouse up`) or 64 hex digits (openssl x509 -fingerprint -sha256)');
}
