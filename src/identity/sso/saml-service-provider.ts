// The gateway as a SAML 2.0 service provider (node-saml): SP-initiated sign-in only, AuthnRequest
// by HTTP-Redirect, Response by HTTP-POST to the ACS URL. The assertion must be signed by a
// configured certificate, for this gateway's entity id, for the ACS URL, answering the request
// of this sign-in, and within its validity; responses nobody asked for are refused.
import { randomBytes, X509Certificate } from 'node:crypto';
import { SAML, ValidateInResponseTo, type CacheProvider, type Profile } from '@node-saml/node-saml';
import type { PendingLogin } from '../../store/types.ts';
import type { SamlProviderConfig } from './config.ts';
import { SignInRefusal } from './errors.ts';
import { checkConfirmation, describeSamlError, type PostedResponse } from './saml-response-checks.ts';
import { groupsFrom, keptClaims, usernameFrom, type VerifiedPerson } from './verified-person.ts';

export class SamlServiceProvider {
  readonly protocol = 'saml';
  readonly name: string;
  readonly spEntityId: string;
  private readonly cfg: SamlProviderConfig;
  private readonly acsUrl: string;
  private readonly loginTimeoutMs: number;
  private readonly trusted: X509Certificate[];

  constructor(cfg: SamlProviderConfig, urls: { acs: string; defaultEntityId: string }, loginTimeoutMs: number) {
    this.cfg = cfg;
    this.name = cfg.name;
    this.acsUrl = urls.acs;
    this.spEntityId = cfg.spEntityId ?? urls.defaultEntityId;
    this.loginTimeoutMs = loginTimeoutMs;
    this.trusted = cfg.idpCerts.map((pem) => new X509Certificate(pem));
  }

  /** node-saml bound to one sign-in: its request id, and the only InResponseTo it accepts. */
  private saml(login: Pick<PendingLogin, 'state' | 'createdAt' | 'status'>): SAML {
    const requests: CacheProvider = {
      saveAsync: async (_key, value) => ({ value, createdAt: Date.now() }),
      getAsync: async (key) => (key === login.state && login.status === 'pending' ? new Date(login.createdAt).toISOString() : null),
      // The sign-in's own status, advanced atomically, is what makes a response single-use.
      removeAsync: async () => null,
    };
    return new SAML({
      entryPoint: this.cfg.entryPoint, issuer: this.spEntityId, callbackUrl: this.acsUrl, audience: this.spEntityId,
      idpCert: this.cfg.idpCerts,
      wantAssertionsSigned: true, wantAuthnResponseSigned: this.cfg.wantResponseSigned,
      acceptedClockSkewMs: this.cfg.clockSkewSeconds * 1000,
      validateInResponseTo: ValidateInResponseTo.always, requestIdExpirationPeriodMs: this.loginTimeoutMs, cacheProvider: requests,
      generateUniqueId: () => login.state,
      // Let the IdP choose the NameID format and how the person authenticates (MFA included).
      identifierFormat: null, disableRequestedAuthnContext: true,
    });
  }

  async prepare(): Promise<{ state: string; secret: string }> {
    // An XML ID must not start with a digit.
    return { state: `_${randomBytes(20).toString('hex')}`, secret: '{}' };
  }

  authorizationUrl(login: PendingLogin): Promise<string> {
    return this.saml(login).getAuthorizeUrlAsync('', undefined, {});
  }

  /** The SP metadata an IdP administrator registers this gateway with. */
  metadata(): string {
    return this.saml({ state: '_', createdAt: 0, status: 'collected' }).generateServiceProviderMetadata(null, null);
  }

  async finish(login: PendingLogin, samlResponse: string, posted: PostedResponse): Promise<VerifiedPerson> {
    let profile: Profile | null;
    try {
      ({ profile } = await this.saml(login).validatePostResponseAsync({ SAMLResponse: samlResponse }));
    } catch (err) {
      throw new SignInRefusal(describeSamlError(err, posted, this.trusted));
    }
    if (!profile || !profile.getAssertionXml) throw new SignInRefusal('the SAML response holds no sign-in');
    checkConfirmation(profile.getAssertionXml(), posted, this.acsUrl, login.state);
    // node-saml compares idpIssuer only on logout messages.
    if (this.cfg.idpEntityId !== undefined && profile.issuer !== this.cfg.idpEntityId) {
      throw new SignInRefusal(`the SAML assertion was issued by "${profile.issuer ?? ''}", not by the configured idp_entity_id "${this.cfg.idpEntityId}"`);
    }
    const issuer = profile.issuer || this.cfg.idpEntityId || this.name;
    const attributes = (profile.attributes ?? {}) as Record<string, unknown>;
    const { usernameAttribute, groupsAttribute } = this.cfg;
    const username = usernameAttribute ? usernameFrom(attributes[usernameAttribute], `"${usernameAttribute}" attribute (username_attribute)`)
      : usernameFrom(profile.nameID, 'NameID');
    return {
      externalKey: `saml:${issuer}#${profile.nameID}`,
      username,
      claims: {
        ...keptClaims(attributes),
        name_id: profile.nameID, ...(profile.nameIDFormat ? { name_id_format: profile.nameIDFormat } : {}), issuer,
        ...(profile.sessionIndex ? { session_index: profile.sessionIndex } : {}), audience: this.spEntityId,
      },
      groups: groupsAttribute ? groupsFrom(attributes[groupsAttribute]) : [],
      authSource: `saml:${this.name}`,
    };
  }
}
