// A SAML 2.0 identity provider for sign-in tests: takes the gateway's AuthnRequest (HTTP-Redirect
// binding), shows a login form, and answers with a real Response whose assertion it signs with
// xml-crypto (RSA-SHA256, exclusive c14n, enveloped), delivered as the auto-submitting HTML form of
// the HTTP-POST binding — which the test's browser then posts to the ACS, as a browser would.
// Tests can change the next answer (audience, recipient, times, which signatures, which key).
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { randomBytes, webcrypto } from 'node:crypto';
import { inflateRawSync } from 'node:zlib';
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { SignedXml } from 'xml-crypto';

export interface SigningMaterial { keyPem: string; certPem: string }

export interface AnswerOptions {
  /** Default: the SP entity id the request named. */
  audience?: string;
  /** SubjectConfirmationData Recipient; default: the ACS URL of the request. */
  recipient?: string;
  /** Response Destination; default: the ACS URL. null: left out. */
  destination?: string | null;
  /** Default: the request's ID. null: left out (as if IdP-initiated). */
  inResponseTo?: string | null;
  /** Offsets from now, in seconds. */
  notBefore?: number;
  notOnOrAfter?: number;
  /** What is signed (default: the assertion). */
  sign?: 'assertion' | 'response' | 'both' | 'none';
  /** Sign with this key and certificate instead of the IdP's own. */
  signer?: SigningMaterial;
  /** The Issuer of the Response and the assertion; default: the IdP's entity id. */
  issuer?: string;
}

export interface TestAccount { password: string; nameId: string; attributes: Record<string, string | string[]> }

export interface TestSamlIdp {
  entityId: string;
  /** The single sign-on URL (entry_point). */
  ssoUrl: string;
  material: SigningMaterial;
  /** Applies to the next answer only. */
  next: AnswerOptions;
  /** AuthnRequests received (decoded XML). */
  requests: string[];
  close(): Promise<void>;
}

export async function selfSignedRsa(cn: string): Promise<SigningMaterial> {
  const crypto = webcrypto as unknown as Crypto;
  x509.cryptoProvider.set(crypto);
  const alg = { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256', publicExponent: new Uint8Array([1, 0, 1]), modulusLength: 2048 };
  const keys = await crypto.subtle.generateKey(alg, true, ['sign', 'verify']);
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: `01${randomBytes(8).toString('hex')}`, name: `CN=${cn}`, notBefore: new Date(Date.now() - 60_000), notAfter: new Date(Date.now() + 86400_000),
    keys, signingAlgorithm: alg,
  });
  const pkcs8 = Buffer.from(await crypto.subtle.exportKey('pkcs8', keys.privateKey)).toString('base64');
  return { certPem: cert.toString('pem'), keyPem: `-----BEGIN PRIVATE KEY-----\n${pkcs8.match(/.{1,64}/g)!.join('\n')}\n-----END PRIVATE KEY-----\n` };
}

const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/"/g, '&quot;');
const iso = (offsetSeconds: number): string => new Date(Date.now() + offsetSeconds * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z');
const newId = (): string => `_${randomBytes(16).toString('hex')}`;

/** Signs the element with ID `id` (enveloped; the signature goes right after its Issuer). */
export function signElement(xml: string, id: string, signer: SigningMaterial): string {
  const sig = new SignedXml({
    privateKey: signer.keyPem, publicCert: signer.certPem,
    signatureAlgorithm: 'http://www.w3.org/2001/04/xmldsig-more#rsa-sha256', canonicalizationAlgorithm: 'http://www.w3.org/2001/10/xml-exc-c14n#',
  });
  sig.addReference({
    xpath: `//*[@ID='${id}']`, digestAlgorithm: 'http://www.w3.org/2001/04/xmlenc#sha256',
    transforms: ['http://www.w3.org/2000/09/xmldsig#enveloped-signature', 'http://www.w3.org/2001/10/xml-exc-c14n#'],
  });
  sig.computeSignature(xml, { prefix: 'ds', location: { reference: `//*[@ID='${id}']/*[local-name(.)='Issuer']`, action: 'after' } });
  return sig.getSignedXml();
}

export function buildResponse(o: {
  entityId: string; acs: string; audience: string; requestId: string | null; account: TestAccount; answer: AnswerOptions; material: SigningMaterial;
}): string {
  const { answer } = o;
  const issuer = answer.issuer ?? o.entityId;
  const responseId = newId();
  const assertionId = newId();
  const inResponseTo = answer.inResponseTo === undefined ? o.requestId : answer.inResponseTo;
  const irt = inResponseTo ? ` InResponseTo="${esc(inResponseTo)}"` : '';
  const destination = answer.destination === undefined ? o.acs : answer.destination;
  const notBefore = iso(answer.notBefore ?? -30);
  const notOnOrAfter = iso(answer.notOnOrAfter ?? 300);
  const attributes = Object.entries(o.account.attributes).map(([name, value]) => `<saml:Attribute Name="${esc(name)}">${
    (Array.isArray(value) ? value : [value]).map((v) => `<saml:AttributeValue xsi:type="xs:string">${esc(v)}</saml:AttributeValue>`).join('')}</saml:Attribute>`).join('');
  const assertion = `<saml:Assertion xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" xmlns:xs="http://www.w3.org/2001/XMLSchema" ` +
    `xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" ID="${assertionId}" Version="2.0" IssueInstant="${iso(0)}">` +
    `<saml:Issuer>${esc(issuer)}</saml:Issuer>` +
    `<saml:Subject><saml:NameID Format="urn:oasis:names:tc:SAML:2.0:nameid-format:persistent">${esc(o.account.nameId)}</saml:NameID>` +
    `<saml:SubjectConfirmation Method="urn:oasis:names:tc:SAML:2.0:cm:bearer"><saml:SubjectConfirmationData NotOnOrAfter="${notOnOrAfter}" ` +
    `Recipient="${esc(answer.recipient ?? o.acs)}"${irt}/></saml:SubjectConfirmation></saml:Subject>` +
    `<saml:Conditions NotBefore="${notBefore}" NotOnOrAfter="${notOnOrAfter}"><saml:AudienceRestriction><saml:Audience>${esc(answer.audience ?? o.audience)}</saml:Audience></saml:AudienceRestriction></saml:Conditions>` +
    `<saml:AuthnStatement AuthnInstant="${iso(0)}" SessionIndex="${newId()}"><saml:AuthnContext><saml:AuthnContextClassRef>urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport</saml:AuthnContextClassRef></saml:AuthnContext></saml:AuthnStatement>` +
    `<saml:AttributeStatement>${attributes}</saml:AttributeStatement></saml:Assertion>`;
  let xml = `<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="${responseId}" Version="2.0" ` +
    `IssueInstant="${iso(0)}"${destination ? ` Destination="${esc(destination)}"` : ''}${irt}><saml:Issuer>${esc(issuer)}</saml:Issuer>` +
    `<samlp:Status><samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:Success"/></samlp:Status>${assertion}</samlp:Response>`;
  const sign = answer.sign ?? 'assertion';
  const signer = answer.signer ?? o.material;
  if (sign === 'assertion' || sign === 'both') xml = signElement(xml, assertionId, signer);
  if (sign === 'response' || sign === 'both') xml = signElement(xml, responseId, signer);
  return xml;
}

/** The auto-submitting form of the HTTP-POST binding (a browser runs the script; tests submit the form). */
function postForm(acs: string, samlResponse: string, relayState: string): string {
  return `<!doctype html><html><body onload="document.forms[0].submit()"><form method="post" action="${esc(acs)}">` +
    `<input type="hidden" name="SAMLResponse" value="${esc(samlResponse)}">` +
    (relayState ? `<input type="hidden" name="RelayState" value="${esc(relayState)}">` : '') +
    '<noscript><button type="submit">Continue</button></noscript></form></body></html>';
}

function body(req: IncomingMessage): Promise<URLSearchParams> {
  return new Promise((resolve) => {
    let text = '';
    req.on('data', (d: Buffer) => { text += d.toString(); });
    req.on('end', () => resolve(new URLSearchParams(text)));
  });
}

export async function startSamlIdp(accounts: Record<string, TestAccount>): Promise<TestSamlIdp> {
  const material = await selfSignedRsa('Test SAML IdP');
  const requests: string[] = [];
  const idp: TestSamlIdp = { entityId: '', ssoUrl: '', material, next: {}, requests, close: async () => {} };
  const server: Server = createServer((req, res) => {
    void (async () => {
      const url = new URL(req.url!, idp.ssoUrl);
      if (req.method === 'GET' && url.pathname === '/sso') {
        const request = inflateRawSync(Buffer.from(url.searchParams.get('SAMLRequest') ?? '', 'base64')).toString('utf8');
        requests.push(request);
        const field = (name: string): string => new RegExp(`\\b${name}="([^"]*)"`).exec(request)?.[1] ?? '';
        const issuer = /<(?:saml:)?Issuer[^>]*>([^<]*)</.exec(request)?.[1] ?? '';
        res.writeHead(200, { 'content-type': 'text/html' }).end(`<!doctype html><title>Test IdP</title><form method="post" action="/sso/login">` +
          `<input type="hidden" name="requestId" value="${esc(field('ID'))}"><input type="hidden" name="acs" value="${esc(field('AssertionConsumerServiceURL'))}">` +
          `<input type="hidden" name="sp" value="${esc(issuer)}"><input type="hidden" name="relayState" value="${esc(url.searchParams.get('RelayState') ?? '')}">` +
          '<input name="login" value=""><input name="password" type="password" value=""><button type="submit">Sign in</button></form>');
        return;
      }
      if (req.method === 'POST' && url.pathname === '/sso/login') {
        const form = await body(req);
        const account = accounts[form.get('login') ?? ''];
        if (!account || account.password !== form.get('password')) return void res.writeHead(200, { 'content-type': 'text/html' }).end('<p>wrong user name or password</p>');
        const answer = idp.next;
        idp.next = {};
        const xml = buildResponse({ entityId: idp.entityId, acs: form.get('acs')!, audience: form.get('sp')!, requestId: form.get('requestId'), account, answer, material });
        res.writeHead(200, { 'content-type': 'text/html' }).end(postForm(form.get('acs')!, Buffer.from(xml).toString('base64'), form.get('relayState') ?? ''));
        return;
      }
      res.writeHead(404).end();
    })().catch((err: Error) => res.writeHead(500).end(err.stack));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const origin = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  idp.entityId = `${origin}/metadata`;
  idp.ssoUrl = `${origin}/sso`;
  idp.close = () => new Promise<void>((resolve) => { server.closeAllConnections(); server.close(() => resolve()); });
  return idp;
}
