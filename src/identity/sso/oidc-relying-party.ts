// The gateway as an OpenID Connect relying party (openid-client): authorization code flow with
// PKCE, state and nonce; the ID token's signature is checked against the provider's keys even
// though it comes straight from the token endpoint (non-repudiation: the recorded claims were
// signed by the provider, not just received from it).
import * as client from 'openid-client';
import type { PendingLogin } from '../../store/types.ts';
import type { OidcProviderConfig } from './config.ts';
import { SignInRefusal, SignInUnavailable } from './errors.ts';
import { groupsFrom, keptClaims, usernameFrom, type VerifiedPerson } from './verified-person.ts';
import { describeOidcError } from './oidc-errors.ts';

interface OidcSecret { verifier: string; nonce: string }

export class OidcRelyingParty {
  readonly protocol = 'oidc';
  readonly name: string;
  private readonly cfg: OidcProviderConfig;
  private readonly redirectUri: string;
  private readonly timeoutSeconds: number;
  private discovered?: Promise<client.Configuration>;

  constructor(cfg: OidcProviderConfig, redirectUri: string, timeoutSeconds = 10) {
    this.cfg = cfg;
    this.name = cfg.name;
    this.redirectUri = redirectUri;
    this.timeoutSeconds = timeoutSeconds;
  }

  /** Discovery, once; a failed attempt is retried at the next sign-in. */
  private configuration(): Promise<client.Configuration> {
    if (!this.discovered) {
      const { issuer, clientId, clientSecret, clockSkewSeconds } = this.cfg;
      const metadata: Partial<client.ClientMetadata> = { [client.clockTolerance]: clockSkewSeconds };
      const auth = clientSecret ? client.ClientSecretBasic(clientSecret) : client.None();
      // http:// issuers pass configuration only on loopback addresses (local providers, tests).
      const execute = [client.enableNonRepudiationChecks, ...(new URL(issuer).protocol === 'http:' ? [client.allowInsecureRequests] : [])];
      this.discovered = client.discovery(new URL(issuer), clientId, metadata, auth, { execute, timeout: this.timeoutSeconds }).catch((err: unknown) => {
        this.discovered = undefined;
        throw new SignInUnavailable(`cannot reach identity provider "${this.name}" (${issuer}): ${describeOidcError(err)}`);
      });
    }
    return this.discovered;
  }

  /** The per-sign-in secrets, made when `gatehouse login` starts (which also fails early when the provider is down). */
  async prepare(): Promise<{ state: string; secret: string }> {
    await this.configuration();
    const secret: OidcSecret = { verifier: client.randomPKCECodeVerifier(), nonce: client.randomNonce() };
    return { state: client.randomState(), secret: JSON.stringify(secret) };
  }

  async authorizationUrl(login: PendingLogin): Promise<string> {
    const { verifier, nonce } = JSON.parse(login.secret) as OidcSecret;
    const url = client.buildAuthorizationUrl(await this.configuration(), {
      redirect_uri: this.redirectUri, scope: this.cfg.scopes.join(' '), state: login.state, nonce,
      code_challenge: await client.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256',
    });
    return url.href;
  }

  /** Checks the provider's answer (`callbackUrl`: the redirect as received) and redeems the code. */
  async finish(login: PendingLogin, callbackUrl: URL): Promise<VerifiedPerson> {
    const config = await this.configuration();
    const { verifier, nonce } = JSON.parse(login.secret) as OidcSecret;
    let tokens: Awaited<ReturnType<typeof client.authorizationCodeGrant>>;
    try {
      tokens = await client.authorizationCodeGrant(config, callbackUrl, { pkceCodeVerifier: verifier, expectedState: login.state, expectedNonce: nonce, idTokenExpected: true });
    } catch (err) {
      throw new SignInRefusal(describeOidcError(err));
    }
    const idToken = tokens.claims();
    if (!idToken) throw new SignInRefusal('the identity provider sent no ID token');
    let claims: Record<string, unknown> = { ...idToken };
    const { usernameClaim, groupsClaim } = this.cfg;
    // Providers that follow the spec strictly put profile claims in the userinfo answer only.
    const lacking = claims[usernameClaim] === undefined || (groupsClaim !== undefined && claims[groupsClaim] === undefined);
    if (lacking && config.serverMetadata().userinfo_endpoint && tokens.access_token) {
      try {
        const userinfo = await client.fetchUserInfo(config, tokens.access_token, idToken.sub);
        claims = { ...userinfo, ...idToken };
      } catch (err) {
        throw new SignInRefusal(`the identity provider's userinfo answer was refused: ${describeOidcError(err)}`);
      }
    }
    return {
      externalKey: `oidc:${idToken.iss}#${idToken.sub}`,
      username: usernameFrom(claims[usernameClaim], `"${usernameClaim}" claim (username_claim)`),
      claims: { ...keptClaims(claims), aud: this.cfg.clientId },
      groups: groupsClaim ? groupsFrom(claims[groupsClaim]) : [],
      authSource: `oidc:${this.name}`,
    };
  }
}
