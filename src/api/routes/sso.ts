// Sign-in through identity providers (docs/sso.md). The CLI's two calls carry no bearer token (the
// poll token is the secret); the browser's pages are HTML. Logout revokes the caller's own token.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { ApiDeps } from '../server.ts';
import { identityView } from './identities.ts';
import { hashToken } from '../../crypto/tokens.ts';
import { SignInRefusal, SignInUnavailable } from '../../identity/sso/errors.ts';
import type { SignInOutcome, SignInService } from '../../identity/sso/sign-in-service.ts';
import { codeEntryPage, confirmPage, refusedPage, signedInPage } from '../../identity/sso/pages.ts';

/** Which sign-in this browser started: set when it opens the link, read at the OIDC callback. */
const LOGIN_COOKIE = 'gatehouse_login';

const PAGE_HEADERS = {
  'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store',
  'content-security-policy': "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
  'x-frame-options': 'DENY', 'referrer-policy': 'no-referrer',
};

function html(reply: FastifyReply, status: number, body: string): FastifyReply {
  return reply.code(status).headers(PAGE_HEADERS).send(body);
}

function browserOf(req: FastifyRequest): { clientAddr: string; userAgent: string } {
  return { clientAddr: req.ip, userAgent: String(req.headers['user-agent'] ?? '') };
}

function cookie(req: FastifyRequest, name: string): string | undefined {
  for (const part of String(req.headers.cookie ?? '').split(';')) {
    const [k, ...v] = part.trim().split('=');
    if (k === name) return v.join('=');
  }
  return undefined;
}

function outcomePage(reply: FastifyReply, outcome: SignInOutcome): FastifyReply {
  if (outcome.ok && outcome.stage === 'confirm') {
    const c = outcome.confirmation;
    return html(reply, c.error ? 400 : 200, confirmPage({ ...c, identity: c.identity.name }));
  }
  if (outcome.ok) return html(reply, 200, signedInPage(outcome.identity.name, outcome.provider));
  return html(reply, outcome.status, refusedPage(outcome.message, outcome.userCode));
}

export async function ssoRoutes(app: FastifyInstance, deps: ApiDeps): Promise<void> {
  const disabled = { error: 'this gateway has no identity providers for people to sign in with (sso in gatehouse.yaml)' };
  const enabled = (sso: SignInService | undefined): sso is SignInService => sso?.enabled === true;
  const sso = deps.sso;

  // Browsers post forms (the code page; SAML's HTTP-POST binding).
  app.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string', bodyLimit: 512 * 1024 }, (_req, body, done) => {
    done(null, Object.fromEntries(new URLSearchParams(String(body))));
  });

  app.post<{ Body: { provider?: string; host?: string } }>('/api/v1/login/start', {
    schema: { body: { type: 'object', additionalProperties: false, properties: {
      provider: { type: 'string', minLength: 1, maxLength: 63 },
      // The CLI's host name, shown on the confirmation page as its claim (the address is what the gateway saw).
      host: { type: 'string', minLength: 1, maxLength: 253 },
    } } },
  }, async (req, reply) => {
    if (!enabled(sso)) return reply.code(404).send(disabled);
    try {
      const started = await sso.start(req.body?.provider, { clientAddr: req.ip, host: req.body?.host });
      return reply.code(201).send({ ...started, expiresAt: new Date(started.expiresAt).toISOString() });
    } catch (err) {
      if (err instanceof SignInUnavailable) return reply.code(503).send({ error: err.message });
      throw err;
    }
  });

  // Which providers a sign-in page may offer (names only: nothing about how they are reached).
  app.get('/api/v1/login/providers', async () => (enabled(sso) ? sso.providerChoice : { providers: [], default: null }));

  app.post<{ Body: { pollToken: string } }>('/api/v1/login/poll', {
    schema: { body: { type: 'object', required: ['pollToken'], additionalProperties: false, properties: { pollToken: { type: 'string', minLength: 1, maxLength: 200 } } } },
  }, async (req, reply) => {
    if (!enabled(sso)) return reply.code(404).send(disabled);
    const out = await sso.poll(req.body.pollToken);
    if (out.status === 'pending') return { status: 'pending', expiresAt: new Date(out.expiresAt).toISOString() };
    return { status: 'signed-in', token: out.token, identity: identityView(out.identity), expiresAt: new Date(out.expiresAt).toISOString() };
  });

  // The code page: for a browser on another device, where typing the short code beats the link.
  app.get('/login', async (_req, reply) => html(reply, enabled(sso) ? 200 : 404, enabled(sso) ? codeEntryPage() : refusedPage(disabled.error)));

  app.post<{ Body: { code?: string } }>('/login', async (req, reply) => {
    if (!enabled(sso)) return html(reply, 404, refusedPage(disabled.error));
    try {
      return reply.code(303).header('location', `/login/${await sso.idForCode(String(req.body?.code ?? ''))}`).send();
    } catch (err) {
      if (err instanceof SignInRefusal) return html(reply, 400, codeEntryPage(err.message));
      throw err;
    }
  });

  // The confirmation form of a sign-in the provider vouched for: the terminal's code, or a cancel.
  app.post<{ Body: { login?: string; secret?: string; code?: string; action?: string } }>('/login/confirm', async (req, reply) => {
    if (!enabled(sso)) return html(reply, 404, refusedPage(disabled.error));
    const b = req.body ?? {};
    const outcome = await sso.confirm(String(b.login ?? ''), String(b.secret ?? ''), String(b.code ?? ''), b.action === 'cancel', browserOf(req));
    return outcomePage(reply, outcome);
  });

  app.get('/login/saml/metadata', async (req, reply) => {
    if (!enabled(sso)) return reply.code(404).send(disabled);
    const provider = sso.samlProvider((req.query as { provider?: string }).provider);
    return reply.type('application/samlmetadata+xml').send(provider.metadata());
  });

  app.get<{ Params: { id: string } }>('/login/:id', async (req, reply) => {
    if (!enabled(sso)) return html(reply, 404, refusedPage(disabled.error));
    try {
      const { redirect, login } = await sso.visit(req.params.id);
      const publicUrl = new URL(sso.publicUrl);
      const secure = publicUrl.protocol === 'https:' ? '; Secure' : '';
      const maxAge = Math.max(1, Math.ceil((login.expiresAt - Date.now()) / 1000));
      // Lax: sent on the provider's top-level redirect back, never on cross-site subrequests.
      // The path is the one browsers see (public_url may carry a prefix a proxy strips).
      const cookiePath = `${publicUrl.pathname.replace(/\/+$/, '')}/login`;
      reply.header('set-cookie', `${LOGIN_COOKIE}=${login.id}; Path=${cookiePath}; HttpOnly; SameSite=Lax; Max-Age=${maxAge}${secure}`);
      return reply.code(302).headers({ location: redirect, 'cache-control': 'no-store', 'referrer-policy': 'no-referrer' }).send();
    } catch (err) {
      if (err instanceof SignInRefusal) return html(reply, 410, refusedPage(err.message));
      if (err instanceof SignInUnavailable) return html(reply, 503, refusedPage(err.message));
      throw err;
    }
  });

  app.get('/login/oidc/callback', async (req, reply) => {
    if (!enabled(sso)) return html(reply, 404, refusedPage(disabled.error));
    // The URL as the provider redirected to it, on the public origin (the redirect_uri it knows).
    const callbackUrl = new URL(req.url, `${sso.publicUrl}/`);
    callbackUrl.pathname = new URL(`${sso.publicUrl}/login/oidc/callback`).pathname;
    return outcomePage(reply, await sso.finishOidc(cookie(req, LOGIN_COOKIE), callbackUrl, browserOf(req)));
  });

  app.post<{ Body: { SAMLResponse?: string } }>('/login/saml/acs', async (req, reply) => {
    if (!enabled(sso)) return html(reply, 404, refusedPage(disabled.error));
    const samlResponse = req.body?.SAMLResponse;
    if (typeof samlResponse !== 'string' || samlResponse === '') return html(reply, 400, refusedPage('the request carries no SAMLResponse'));
    return outcomePage(reply, await sso.finishSaml(samlResponse, browserOf(req)));
  });
}

/** POST /api/v1/logout: the caller's own token is revoked (any identity may sign itself out). */
export async function logoutRoutes(app: FastifyInstance, deps: ApiDeps): Promise<void> {
  app.post('/api/v1/logout', async (req) => {
    const token = /^Bearer\s+(\S+)$/i.exec(String(req.headers.authorization))![1];
    const record = await deps.store.getTokenByHash(hashToken(token));
    const revoked = record ? await deps.store.revokeToken(record.id, Date.now()) : false;
    if (revoked) await deps.sessions.accessChanged('token revoked (signed out)');
    deps.log.info({ identity: req.identity!.name, revoked }, 'signed out');
    return { identity: req.identity!.name, revoked };
  });
}
