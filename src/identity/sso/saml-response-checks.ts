// What node-saml leaves to the service provider, and words for what it refuses.
//
// node-saml verifies signatures (only the configured certificates; only the signed bytes are used
// afterwards), audience and NotBefore/NotOnOrAfter. It does not compare the bearer confirmation's
// Recipient or the Response's Destination with the ACS URL, nor require the signed assertion's
// own InResponseTo: `checkConfirmation` does, on the verified assertion only.
import { X509Certificate } from 'node:crypto';
import { SignInRefusal } from './errors.ts';
import { childElements as children, descendantElements as descendants, parseXml as parse, type XmlElement } from './xml-dom.ts';

const ASSERTION_NS = 'urn:oasis:names:tc:SAML:2.0:assertion';
const PROTOCOL_NS = 'urn:oasis:names:tc:SAML:2.0:protocol';
const DSIG_NS = 'http://www.w3.org/2000/09/xmldsig#';
const BEARER = 'urn:oasis:names:tc:SAML:2.0:cm:bearer';

/** The Response as posted (unverified): only for finding the sign-in and wording refusals. */
export interface PostedResponse {
  /** The Response's InResponseTo: which sign-in it claims to answer. */
  inResponseTo: string | null;
  destination: string | null;
  assertions: number;
  assertionSigned: boolean;
  responseSigned: boolean;
  /** The certificate the assertion's signature carries in its KeyInfo, if any. */
  signingCert?: X509Certificate;
  confirmationNotBefore?: string;
  confirmationNotOnOrAfter?: string;
  conditionsNotBefore?: string;
  conditionsNotOnOrAfter?: string;
}

export function readPostedResponse(samlResponseBase64: string): PostedResponse {
  const root = parse(Buffer.from(samlResponseBase64, 'base64').toString('utf8'));
  if (!root || root.namespaceURI !== PROTOCOL_NS || root.localName !== 'Response') throw new SignInRefusal('the posted SAMLResponse is not a SAML 2.0 Response');
  const assertions = children(root, ASSERTION_NS, 'Assertion');
  const first = assertions[0];
  const signature = first ? children(first, DSIG_NS, 'Signature')[0] : undefined;
  let signingCert: X509Certificate | undefined;
  const certText = signature ? descendants(signature, DSIG_NS, 'X509Certificate')[0]?.textContent : undefined;
  if (certText) {
    try {
      signingCert = new X509Certificate(Buffer.from(certText.replace(/\s+/g, ''), 'base64'));
    } catch { /* not a certificate: the signature check says the rest */ }
  }
  const confirmation = first ? descendants(first, ASSERTION_NS, 'SubjectConfirmationData')[0] : undefined;
  const conditions = first ? children(first, ASSERTION_NS, 'Conditions')[0] : undefined;
  return {
    inResponseTo: root.getAttribute('InResponseTo') || null, destination: root.getAttribute('Destination') || null,
    assertions: assertions.length + children(root, ASSERTION_NS, 'EncryptedAssertion').length,
    assertionSigned: signature !== undefined, responseSigned: children(root, DSIG_NS, 'Signature').length > 0, signingCert,
    confirmationNotBefore: confirmation?.getAttribute('NotBefore') || undefined, confirmationNotOnOrAfter: confirmation?.getAttribute('NotOnOrAfter') || undefined,
    conditionsNotBefore: conditions?.getAttribute('NotBefore') || undefined, conditionsNotOnOrAfter: conditions?.getAttribute('NotOnOrAfter') || undefined,
  };
}

/**
 * The verified assertion must be a bearer assertion for this ACS URL, answering this sign-in, with
 * an end to its validity; and the Response must not be addressed elsewhere.
 */
export function checkConfirmation(verifiedAssertionXml: string, posted: PostedResponse, acsUrl: string, requestId: string): void {
  if (posted.destination !== null && posted.destination !== acsUrl) {
    throw new SignInRefusal(`the SAML response is addressed to another destination: "${posted.destination}" (this gateway's ACS URL is "${acsUrl}")`);
  }
  const assertion = parse(verifiedAssertionXml);
  if (!assertion) throw new SignInRefusal('the signed assertion cannot be read');
  const bearers = descendants(assertion, ASSERTION_NS, 'SubjectConfirmation').filter((c) => c.getAttribute('Method') === BEARER)
    .map((c) => children(c, ASSERTION_NS, 'SubjectConfirmationData')[0]).filter((d): d is XmlElement => d !== undefined);
  if (bearers.length === 0) throw new SignInRefusal('the SAML assertion has no bearer subject confirmation');
  const forUs = bearers.filter((d) => d.getAttribute('Recipient') === acsUrl);
  if (forUs.length === 0) {
    const recipient = bearers[0].getAttribute('Recipient');
    throw new SignInRefusal(`the SAML assertion is for another recipient: ${recipient ? `"${recipient}"` : 'none named'} (this gateway's ACS URL is "${acsUrl}")`);
  }
  if (!forUs.some((d) => d.getAttribute('InResponseTo') === requestId)) throw new SignInRefusal('the signed SAML assertion does not answer this sign-in (its InResponseTo names another request)');
  if (!forUs.some((d) => d.getAttribute('NotOnOrAfter'))) throw new SignInRefusal('the SAML assertion\'s subject confirmation has no NotOnOrAfter (it would never expire)');
}

/** node-saml's refusal as a sentence; `posted` (unverified) only picks the wording. */
export function describeSamlError(err: unknown, posted: PostedResponse, trusted: X509Certificate[]): string {
  const m = (err as Error).message ?? String(err);
  if ((err as Error).name === 'SamlStatusError' || m.startsWith('SAML provider returned')) return `the identity provider refused the sign-in: ${m.replace(/^SAML provider returned /, '')}`;
  if (m === 'Invalid signature: multiple assertions') return 'the SAML response holds more than one assertion (refused: signature wrapping)';
  if (m.includes('ID cannot refer to more than one element')) return 'two elements of the SAML response carry the signed ID (refused: signature wrapping)';
  if (m.includes('does not refer to it\'s parent element')) return 'the assertion\'s signature covers another element than the assertion (refused: signature wrapping)';
  if (m === 'Invalid document signature') return posted.responseSigned ? 'the SAML response\'s signature does not verify' : 'the SAML response is not signed (want_response_signed)';
  if (m === 'Invalid signature' || m.startsWith('Invalid signature') || m === 'Too many signatures found for this element') {
    if (!posted.assertionSigned) return 'the SAML assertion is not signed';
    const cert = posted.signingCert;
    if (cert && !trusted.some((t) => t.raw.equals(cert.raw))) return `the SAML assertion is signed with an untrusted certificate (${cert.subject.replace(/\n/g, ', ')}), not the configured idp_cert`;
    return 'the SAML assertion\'s signature does not verify: it was changed after signing, or signed by another key';
  }
  if (m === 'SAML assertion not yet valid') return `the SAML assertion is not valid yet (NotBefore${posted.conditionsNotBefore ? ` ${posted.conditionsNotBefore}` : ''})`;
  if (m.startsWith('SAML assertion expired')) return `the SAML assertion has expired (NotOnOrAfter${posted.conditionsNotOnOrAfter ? ` ${posted.conditionsNotOnOrAfter}` : ''})`;
  if (m.startsWith('No valid subject confirmation')) {
    const now = Date.now();
    if (posted.confirmationNotOnOrAfter && Date.parse(posted.confirmationNotOnOrAfter) <= now) return `the SAML assertion has expired (NotOnOrAfter ${posted.confirmationNotOnOrAfter})`;
    if (posted.confirmationNotBefore && Date.parse(posted.confirmationNotBefore) > now) return `the SAML assertion is not valid yet (NotBefore ${posted.confirmationNotBefore})`;
    return 'the SAML assertion has no subject confirmation that is valid now';
  }
  if (m.startsWith('SAML assertion audience mismatch')) {
    const received = /Received: (.*)$/.exec(m)?.[1] ?? '';
    return `the SAML assertion is meant for another audience: "${received}" (this gateway is "${/Expected: (.*?) Received/.exec(m)?.[1] ?? ''}")`;
  }
  if (m === 'SAML assertion has no AudienceRestriction' || m.includes('has no Audience value')) return 'the SAML assertion names no audience';
  if (m.includes('InResponseTo')) return 'the SAML response does not answer this sign-in (InResponseTo)';
  if (m === 'Missing SAML assertion') return 'the SAML response holds no assertion';
  return `the SAML response was refused: ${m}`;
}
