// A real OpenID Connect provider for sign-in tests: `oidc-provider` on a loopback port, with test
// accounts, a plain login form (its interaction pages), and a way to make it misbehave the way a
// compromised or broken provider would (publish other signing keys than it signs with).
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import Provider, { type KoaContextWithOIDC } from 'oidc-provider';

export interface TestAccount { password: string; claims: Record<string, unknown> }

export interface TestOidcProvider {
  issuer: string;
  clientId: string;
  clientSecret: string;
  /** The kid of the key it signs with. */
  keyId: string;
  /** Registers the gateway's callback (known once the gateway listens) and starts answering. */
  registerClient(redirectUri: string): void;
  /** Serve this JWKS instead of the real one (null: the real one again). */
  fakeJwks: { keys: unknown[] } | null;
  /** Every request path the provider was asked, in order (for assertions). */
  requests: string[];
  close(): Promise<void>;
}

function signingKey(): Record<string, unknown> {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { ...privateKey.export({ format: 'jwk' }), kid: `k-${randomBytes(4).toString('hex')}`, use: 'sig', alg: 'RS256' };
}

export function otherPublicJwks(kidLike?: string): { keys: unknown[] } {
  const { kty, n, e } = signingKey() as { kty: string; n: string; e: string };
  return { keys: [{ kty, n, e, kid: kidLike, use: 'sig', alg: 'RS256' }] };
}

export async function startOidcProvider(accounts: Record<string, TestAccount>): Promise<TestOidcProvider> {
  let provider: Provider | undefined;
  let handler: ((req: IncomingMessage, res: ServerResponse) => void) | undefined;
  const requests: string[] = [];
  const key = signingKey();
  const state: TestOidcProvider = {
    issuer: '', clientId: 'gatehouse', clientSecret: randomBytes(16).toString('hex'), keyId: String(key.kid), fakeJwks: null, requests,
    registerClient: () => {}, close: async () => {},
  };

  const server: Server = createServer((req, res) => {
    const url = new URL(req.url!, state.issuer);
    requests.push(url.pathname);
    if (!provider || !handler) return void res.writeHead(503).end('not ready');
    if (url.pathname === '/jwks' && state.fakeJwks) return void res.writeHead(200, { 'content-type': 'application/jwk-set+json' }).end(JSON.stringify(state.fakeJwks));
    if (url.pathname.startsWith('/interaction/')) return void interaction(provider, req, res, url, accounts).catch((err: Error) => res.writeHead(500).end(err.message));
    handler(req, res);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  state.issuer = `http://127.0.0.1:${(server.address() as { port: number }).port}`;

  state.registerClient = (redirectUri: string) => {
    provider = new Provider(state.issuer, {
      clients: [{
        client_id: state.clientId, client_secret: state.clientSecret, redirect_uris: [redirectUri],
        response_types: ['code'], grant_types: ['authorization_code'], token_endpoint_auth_method: 'client_secret_basic',
      }],
      jwks: { keys: [key] },
      claims: { openid: ['sub'], profile: ['preferred_username', 'name'], email: ['email', 'email_verified'], groups: ['groups'] },
      features: { devInteractions: { enabled: false } },
      pkce: { required: () => true },
      ttl: { Interaction: 600, Session: 3600, Grant: 3600, AccessToken: 600, IdToken: 600 },
      cookies: { keys: [randomBytes(16).toString('hex')] },
      interactions: { url: (_ctx: KoaContextWithOIDC, interaction) => `/interaction/${interaction.uid}` },
      findAccount: (_ctx: KoaContextWithOIDC, id: string) => {
        const account = accounts[id];
        return account ? { accountId: id, claims: () => ({ sub: id, ...account.claims }) } : undefined;
      },
      // A company's own provider: no consent page for its own applications.
      loadExistingGrant: async (ctx: KoaContextWithOIDC) => {
        const oidc = ctx.oidc;
        const existing = oidc.session?.grantIdFor(oidc.client!.clientId);
        if (existing) return oidc.provider.Grant.find(existing);
        const grant = new oidc.provider.Grant({ clientId: oidc.client!.clientId, accountId: oidc.session!.accountId! });
        grant.addOIDCScope('openid profile email groups');
        await grant.save();
        return grant;
      },
    });
    provider.on('server_error', (_ctx: unknown, err: Error) => console.error('oidc-provider error:', err));
    handler = provider.callback();
  };
  state.close = () => new Promise<void>((resolve) => { server.closeAllConnections(); server.close(() => resolve()); });
  return state;
}

/** The provider's login page: a form; a right password finishes the interaction (303 back to the provider). */
async function interaction(provider: Provider, req: IncomingMessage, res: ServerResponse, url: URL, accounts: Record<string, TestAccount>): Promise<void> {
  const details = await provider.interactionDetails(req, res);
  if (req.method === 'GET') {
    res.writeHead(200, { 'content-type': 'text/html' }).end(`<!doctype html><title>Sign in to the test provider</title>
<form method="post" action="/interaction/${details.uid}"><input name="login" value=""><input name="password" type="password" value="">
<button type="submit">Sign in</button></form>
<form method="post" action="/interaction/${details.uid}/abort"><button type="submit">Cancel</button></form>`);
    return;
  }
  if (url.pathname.endsWith('/abort')) {
    await provider.interactionFinished(req, res, { error: 'access_denied', error_description: 'the person cancelled the sign-in' }, { mergeWithLastSubmission: false });
    return;
  }
  const form = new URLSearchParams(await new Promise<string>((resolve) => {
    let body = '';
    req.on('data', (d: Buffer) => { body += d.toString(); });
    req.on('end', () => resolve(body));
  }));
  const login = form.get('login') ?? '';
  if (accounts[login]?.password !== form.get('password')) {
    res.writeHead(200, { 'content-type': 'text/html' }).end('<!doctype html><p>wrong user name or password</p>');
    return;
  }
  await provider.interactionFinished(req, res, { login: { accountId: login } }, { mergeWithLastSubmission: false });
}
