// People signing in through an identity provider, the same way for OIDC and SAML:
//
//   gatehouse login ─POST /api/v1/login/start─▶ a pending sign-in: link id, user code, poll token,
//                                               PKCE verifier/state/nonce or SAML request id
//   browser ─GET /login/<id>─▶ the provider ─…─▶ OIDC callback or SAML ACS ─▶ checked; the person's
//                                               identity found or made; the sign-in marked signed-in
//   browser ◀─ confirmation page: which machine and address started it; the person types the
//              terminal's code ─POST /login/confirm─▶ confirmed (device-flow style, RFC 8628)
//   gatehouse login ─POST /api/v1/login/poll─▶ the gatehouse token, issued once, when collected
//
// The confirmation is what stops a sign-in link from being a phishing lure: whoever started
// `gatehouse login` cannot get a token by sending the link to someone signed in at the provider —
// that person sees where the sign-in came from and must type the code only that terminal shows.
//
// Everything a sign-in needs lives in the store, so any gateway sharing it can finish it; the token
// is made only when the CLI collects it, so it is never stored anywhere but as a hash.
import type { Logger } from 'pino';
import type { Recorder } from '../../recorder/recorder.ts';
import type { Identity, PendingLogin, Store } from '../../store/types.ts';
import { hashToken } from '../../crypto/tokens.ts';
import { formatDuration } from '../../util/duration.ts';
import { UserError, type IdentityService } from '../identity-service.ts';
import type { SsoConfig } from './config.ts';
import { SignInRefusal, SignInUnavailable } from './errors.ts';
import { newConfirmSecret, newLoginId, newPollToken, newUserCode, normalizeUserCode } from './login-codes.ts';
import { OidcRelyingParty } from './oidc-relying-party.ts';
import { SamlServiceProvider } from './saml-service-provider.ts';
import { readPostedResponse } from './saml-response-checks.ts';
import { identityForPerson } from './person-identity.ts';
import { recordSignIn, type SignInAttempt } from './sign-in-record.ts';
import type { VerifiedPerson } from './verified-person.ts';

export type SignInProvider = OidcRelyingParty | SamlServiceProvider;

export interface SignInDeps {
  store: Store;
  identity: IdentityService;
  config: SsoConfig;
  recorder: Recorder;
  log: Logger;
  /** The gateway's external URL: sso.public_url, else the HTTP listener's address (known once it listens). */
  publicUrl: () => string;
  now?: () => number;
}

export interface SignInStarted { loginUrl: string; userCode: string; pollToken: string; provider: string; expiresAt: number }

/** Where the browser was: what it claims about itself, for the recording. */
export interface BrowserInfo { clientAddr: string; userAgent: string }

/** Where `gatehouse login` ran: the address the gateway saw, and the host name the CLI reports (unverified). */
export interface LoginOrigin { clientAddr: string; host?: string }

/** What the confirmation page shows and carries (the secret ties the form to this browser's answer). */
export interface PendingConfirmation {
  loginId: string; secret: string; identity: Identity; provider: string; startedFrom: string | null; startedHost: string | null; startedAt: number;
  /** Set when a wrong code was entered. */
  error?: string;
}

export type SignInOutcome =
  | { ok: true; stage: 'confirm'; confirmation: PendingConfirmation }
  | { ok: true; stage: 'done'; identity: Identity; provider: string }
  | { ok: false; message: string; userCode?: string; status: number };

/** Wrong codes after which a sign-in is refused. */
export const MAX_CODE_FAILURES = 5;

export type PollResult =
  | { status: 'pending'; expiresAt: number }
  | { status: 'signed-in'; token: string; identity: Identity; expiresAt: number };

/** Expired sign-ins stay this long (polls get "expired" rather than "unknown"), then go. */
const KEEP_EXPIRED_MS = 3600_000;

export class SignInService {
  private readonly deps: SignInDeps;
  private readonly now: () => number;
  private built?: Map<string, SignInProvider>;

  constructor(deps: SignInDeps) {
    this.deps = deps;
    this.now = deps.now ?? Date.now;
  }

  get enabled(): boolean {
    return this.deps.config.oidc.length + this.deps.config.saml.length > 0;
  }

  /** The providers people may sign in with, by name, and the default one (for a sign-in page to offer). */
  get providerChoice(): { providers: string[]; default: string | null } {
    const names = [...this.deps.config.oidc.map((c) => c.name), ...this.deps.config.saml.map((c) => c.name)];
    return { providers: names, default: this.deps.config.defaultProvider ?? (names.length === 1 ? names[0]! : null) };
  }

  get publicUrl(): string {
    return this.deps.publicUrl().replace(/\/+$/, '');
  }

  /** Made on first use: the URLs they are told about need the listener's address. */
  private get providers(): Map<string, SignInProvider> {
    if (!this.built) {
      const base = this.publicUrl;
      const timeoutMs = this.deps.config.loginTimeoutSeconds * 1000;
      this.built = new Map<string, SignInProvider>([
        ...this.deps.config.oidc.map((c) => [c.name, new OidcRelyingParty(c, `${base}/login/oidc/callback`)] as const),
        ...this.deps.config.saml.map((c) => [c.name, new SamlServiceProvider(c, { acs: `${base}/login/saml/acs`, defaultEntityId: `${base}/login/saml/metadata` }, timeoutMs)] as const),
      ]);
    }
    return this.built;
  }

  provider(name: string | undefined): SignInProvider {
    const names = [...this.providers.keys()];
    const chosen = name ?? this.deps.config.defaultProvider ?? (names.length === 1 ? names[0] : undefined);
    if (chosen === undefined) throw new UserError(`this gateway has several identity providers: choose one with --provider (${names.join(', ')})`);
    const provider = this.providers.get(chosen);
    if (!provider) throw new UserError(`no identity provider "${chosen}" (this gateway has: ${names.join(', ')})`, 404);
    return provider;
  }

  samlProvider(name: string | undefined): SamlServiceProvider {
    const saml = [...this.providers.values()].filter((p): p is SamlServiceProvider => p instanceof SamlServiceProvider);
    const provider = name === undefined ? saml[0] : saml.find((p) => p.name === name);
    if (!provider) throw new UserError(name === undefined ? 'this gateway has no SAML identity provider' : `no SAML identity provider "${name}"`, 404);
    return provider;
  }

  /** Throws SignInUnavailable when the provider cannot be reached (OIDC discovery). */
  async start(providerName: string | undefined, origin: LoginOrigin): Promise<SignInStarted> {
    const provider = this.provider(providerName);
    const { store, config, log } = this.deps;
    void store.deletePendingLogins(this.now() - KEEP_EXPIRED_MS).catch((err: Error) => log.warn({ err: err.message }, 'could not remove expired sign-ins'));
    const prepared = await provider.prepare();
    const poll = newPollToken();
    const createdAt = this.now();
    for (let attempt = 0; ; attempt++) {
      const login: PendingLogin = {
        id: newLoginId(), pollTokenHash: poll.hash, userCode: newUserCode(), provider: provider.name, protocol: provider.protocol,
        state: prepared.state, secret: prepared.secret, createdAt, expiresAt: createdAt + config.loginTimeoutSeconds * 1000,
        status: 'pending', identityId: null, error: null,
        startedFrom: origin.clientAddr, startedHost: origin.host ?? null, confirmHash: null, confirmedAt: null, codeFailures: 0,
      };
      try {
        await store.createPendingLogin(login);
      } catch (err) {
        // A user code that is taken already (about 1 in 10^10): draw another.
        if (attempt >= 2 || !(await store.getPendingLogin({ userCode: login.userCode }))) throw err;
        continue;
      }
      log.info({ provider: provider.name, userCode: login.userCode, client: origin.clientAddr, host: origin.host }, 'sign-in started');
      return { loginUrl: `${this.publicUrl}/login/${login.id}`, userCode: login.userCode, pollToken: poll.token, provider: provider.name, expiresAt: login.expiresAt };
    }
  }

  /** The sign-in link: where to send the browser (the provider), or why not. */
  async visit(loginId: string): Promise<{ redirect: string; login: PendingLogin }> {
    const login = await this.deps.store.getPendingLogin({ id: loginId });
    if (!login) throw new SignInRefusal('this sign-in link is not known (mistyped, or long expired): run gatehouse login again');
    this.checkOpen(login);
    return { redirect: await this.providerOf(login).authorizationUrl(login), login };
  }

  /** The code a person typed on the code page → that sign-in's link id. */
  async idForCode(typed: string): Promise<string> {
    const userCode = normalizeUserCode(typed);
    const login = userCode ? await this.deps.store.getPendingLogin({ userCode }) : undefined;
    if (!login || login.status !== 'pending' || login.expiresAt <= this.now()) throw new SignInRefusal('no sign-in is waiting for this code: check it, or run gatehouse login again');
    return login.id;
  }

  /** The OIDC callback; `loginId`: the sign-in this browser started (its cookie). */
  async finishOidc(loginId: string | undefined, callbackUrl: URL, browser: BrowserInfo): Promise<SignInOutcome> {
    const login = loginId ? await this.deps.store.getPendingLogin({ id: loginId }) : undefined;
    if (!login || login.protocol !== 'oidc') {
      return this.refuse(undefined, browser, 'oidc', new SignInRefusal('this browser did not start the sign-in: open the link gatehouse login printed in the browser you sign in with'));
    }
    return this.finish(login, browser, (provider) => (provider as OidcRelyingParty).finish(login, callbackUrl));
  }

  /** The SAML ACS: the sign-in is the one whose request the Response answers. */
  async finishSaml(samlResponse: string, browser: BrowserInfo): Promise<SignInOutcome> {
    let posted;
    try {
      posted = readPostedResponse(samlResponse);
    } catch (err) {
      return this.refuse(undefined, browser, 'saml', err);
    }
    const login = posted.inResponseTo ? await this.deps.store.getPendingLogin({ state: posted.inResponseTo }) : undefined;
    if (!login || login.protocol !== 'saml') {
      const why = posted.inResponseTo ? 'answers no sign-in this gateway started (unknown InResponseTo)' : 'answers no request (no InResponseTo): sign-ins must start with gatehouse login';
      return this.refuse(undefined, browser, 'saml', new SignInRefusal(`the SAML response ${why}`));
    }
    return this.finish(login, browser, (provider) => (provider as SamlServiceProvider).finish(login, samlResponse, posted));
  }

  private async finish(login: PendingLogin, browser: BrowserInfo, verify: (provider: SignInProvider) => Promise<VerifiedPerson>): Promise<SignInOutcome> {
    const { store, identity: identities, log } = this.deps;
    try {
      this.checkOpen(login);
      const person = await verify(this.providerOf(login));
      const identity = await identityForPerson(store, identities, person, this.now());
      // One answer, one sign-in: a replayed or raced answer finds it moved on already. The
      // confirmation secret exists only in the page this browser gets back.
      const secret = newConfirmSecret();
      if (!(await store.advancePendingLogin(login.id, 'pending', 'signed-in', { identityId: identity.id, confirmHash: hashToken(secret) }))) throw alreadyFinished();
      log.info({ provider: login.provider, identity: identity.name, userCode: login.userCode, client: browser.clientAddr }, 'identity provider vouched for the person; waiting for the code');
      return {
        ok: true, stage: 'confirm',
        confirmation: { loginId: login.id, secret, identity, provider: login.provider, startedFrom: login.startedFrom, startedHost: login.startedHost, startedAt: login.createdAt },
      };
    } catch (err) {
      return this.refuse(login, browser, login.protocol, err);
    }
  }

  private async refuse(login: PendingLogin | undefined, browser: BrowserInfo, protocol: 'oidc' | 'saml', err: unknown, known?: SignInAttempt): Promise<SignInOutcome> {
    if (!(err instanceof SignInRefusal || err instanceof SignInUnavailable)) throw err;
    const { store, recorder, log } = this.deps;
    // The terminal waiting on this sign-in hears the same reason (unless it finished already).
    if (login) await store.advancePendingLogin(login.id, 'pending', 'refused', { error: err.message });
    const attempt: SignInAttempt = known ?? {
      provider: login?.provider ?? '', protocol, userCode: login?.userCode, ...browser, startedFrom: login?.startedFrom, startedHost: login?.startedHost,
    };
    await recordSignIn(recorder, log, attempt, { refused: err.message });
    log.info({ provider: attempt.provider, protocol, userCode: attempt.userCode, reason: err.message, client: browser.clientAddr }, 'sign-in refused');
    return { ok: false, message: err.message, userCode: attempt.userCode, status: err instanceof SignInUnavailable ? 503 : 403 };
  }

  /**
   * The confirmation form: the terminal's code typed by the person the provider vouched for, in
   * the browser that brought the answer (`secret`), or their cancel. A wrong code shows the form
   * again; after MAX_CODE_FAILURES the sign-in is refused.
   */
  async confirm(loginId: string, secret: string, typed: string, cancel: boolean, browser: BrowserInfo): Promise<SignInOutcome> {
    const { store, recorder, log } = this.deps;
    const login = await store.getPendingLogin({ id: loginId });
    const attempt = (l: PendingLogin): SignInAttempt => ({
      provider: l.provider, protocol: l.protocol, userCode: l.userCode, ...browser, startedFrom: l.startedFrom, startedHost: l.startedHost,
    });
    // Only the page the answer produced holds the secret: another page (or site) cannot confirm.
    if (!login || login.confirmHash === null || login.confirmHash !== hashToken(secret)) {
      return this.refuse(undefined, browser, login?.protocol ?? 'oidc', new SignInRefusal('this confirmation does not belong to a sign-in this browser finished: run gatehouse login again'));
    }
    try {
      if (login.status === 'refused') throw new SignInRefusal(`this sign-in was refused already: ${login.error}`);
      if (login.status !== 'signed-in' || login.confirmedAt !== null) throw alreadyFinished();
      if (login.expiresAt <= this.now()) throw new SignInRefusal(`the sign-in expired: it was started more than ${formatDuration(this.deps.config.loginTimeoutSeconds)} ago; run gatehouse login again`);
      if (cancel) throw new SignInRefusal('the person signed in at the identity provider said they did not start this sign-in');
      const identity = login.identityId ? await store.getIdentity(login.identityId) : undefined;
      if (!identity) throw new SignInRefusal('the identity of this sign-in was removed meanwhile');
      if (normalizeUserCode(typed) !== login.userCode) {
        const failures = await store.countPendingLoginFailure(login.id);
        if (failures >= MAX_CODE_FAILURES) throw new SignInRefusal(`the code was entered wrong ${failures} times`);
        return {
          ok: true, stage: 'confirm',
          confirmation: {
            loginId: login.id, secret, identity, provider: login.provider, startedFrom: login.startedFrom, startedHost: login.startedHost, startedAt: login.createdAt,
            error: `That is not the code the terminal shows (${MAX_CODE_FAILURES - failures} ${MAX_CODE_FAILURES - failures === 1 ? 'try' : 'tries'} left).`,
          },
        };
      }
      if (!(await store.confirmPendingLogin(login.id, login.confirmHash, this.now()))) throw alreadyFinished();
      await recordSignIn(recorder, log, attempt(login), { identity });
      log.info({ provider: login.provider, identity: identity.name, userCode: login.userCode, groups: identity.externalGroups, client: browser.clientAddr, startedFrom: login.startedFrom }, 'signed in');
      return { ok: true, stage: 'done', identity, provider: login.provider };
    } catch (err) {
      if (!(err instanceof SignInRefusal)) throw err;
      // Refused now, though the provider vouched for the person: the terminal hears why.
      await store.advancePendingLogin(login.id, 'signed-in', 'refused', { error: err.message });
      return this.refuse(undefined, browser, login.protocol, err, attempt(login));
    }
  }

  /** The CLI's poll: pending, the token (once), or why not (UserError). */
  async poll(pollToken: string): Promise<PollResult> {
    const { store, identity: identities, config, log } = this.deps;
    const login = await store.getPendingLogin({ pollTokenHash: hashToken(pollToken) });
    if (!login) throw new UserError('no such sign-in (it expired long ago): run gatehouse login again', 404);
    if (login.status === 'refused') throw new UserError(`sign-in refused: ${login.error}`, 403);
    if (login.status === 'collected') throw new UserError('this sign-in\'s token was handed out already', 409);
    // Signed in at the provider but not yet confirmed with the code: still waiting.
    if (login.status === 'pending' || login.confirmedAt === null) {
      if (login.expiresAt <= this.now()) throw new UserError(`the sign-in expired: it was not finished in the browser within ${formatDuration(config.loginTimeoutSeconds)}; run gatehouse login again`, 410);
      return { status: 'pending', expiresAt: login.expiresAt };
    }
    // Signed in: the token is made now, for the one poll that moves the sign-in on.
    if (!(await store.advancePendingLogin(login.id, 'signed-in', 'collected'))) throw new UserError('this sign-in\'s token was handed out already', 409);
    const identity = login.identityId ? await store.getIdentity(login.identityId) : undefined;
    if (!identity) throw new UserError('the identity of this sign-in was removed meanwhile', 410);
    const issued = await identities.issueToken(identity, config.tokenTtlSeconds);
    log.info({ identity: identity.name, provider: login.provider, expiresAt: new Date(issued.record.expiresAt).toISOString() }, 'sign-in token issued');
    return { status: 'signed-in', token: issued.token, identity, expiresAt: issued.record.expiresAt };
  }

  private providerOf(login: PendingLogin): SignInProvider {
    const provider = this.providers.get(login.provider);
    if (!provider || provider.protocol !== login.protocol) throw new SignInRefusal(`identity provider "${login.provider}" is no longer configured`);
    return provider;
  }

  private checkOpen(login: PendingLogin): void {
    if (login.status === 'refused') throw new SignInRefusal(`this sign-in was refused already: ${login.error}`);
    if (login.status !== 'pending') throw alreadyFinished();
    if (login.expiresAt <= this.now()) {
      throw new SignInRefusal(`the sign-in expired: it was started more than ${formatDuration(this.deps.config.loginTimeoutSeconds)} ago; run gatehouse login again`);
    }
  }
}

function alreadyFinished(): SignInRefusal {
  return new SignInRefusal('this sign-in is finished already (an answer from the identity provider was used before: a replay, or the page was reloaded)');
}
