// `gatehouse login`: a person signs in through the gateway's identity provider in a browser (the
// token is stored for later commands), or a CI job or agent run trades its platform's OIDC token
// for a short-lived gatehouse token of a run identity of its own. `gatehouse logout` signs out.
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { ApiClient } from '../api-client.ts';
import { findCiOidcToken, DEFAULT_TOKEN_ENVS } from '../ci-oidc.ts';
import { signInWithBrowser } from '../sso-login.ts';
import { visible } from '../format.ts';
import { credentialsPath, removeCredential, saveCredential, storedCredential } from '../credentials.ts';

type ClientFactory = (cmd: Command) => ApiClient;

interface LoginOptions {
  oidcToken?: string; ci?: boolean; audience: string; tokenEnv?: string; json?: boolean;
  provider?: string; browser: boolean; printToken?: boolean;
}
interface ExchangeOut { token: string; identity: { name: string; kind: string }; expiresAt: string; policy: string; granted: string[] }

/** A CI job that gives no flag still exchanges its platform's token; anywhere else a person signs in. */
function inCi(env: NodeJS.ProcessEnv): boolean {
  return env.GITHUB_ACTIONS === 'true' || env.GITLAB_CI === 'true' || Boolean(env.ACTIONS_ID_TOKEN_REQUEST_URL) || DEFAULT_TOKEN_ENVS.some((v) => env[v]);
}

export function registerLogin(program: Command, client: ClientFactory): void {
  program.command('login').description('sign in through the gateway\'s identity provider (a browser), or exchange a CI job\'s or agent run\'s OIDC token')
    .option('--provider <name>', 'the identity provider to sign in with (when the gateway has several)')
    .option('--no-browser', 'do not try to open a browser; only print the link and code')
    .option('--print-token', 'also print the token on stdout (e.g. PGPASSWORD=$(gatehouse login --print-token))')
    .option('--oidc-token <jwt>', 'CI: the OIDC ID token to exchange ("-": read it from stdin)')
    .option('--ci', 'CI: take the token from the CI environment: GitHub Actions (id-token: write), GitLab CI (id_tokens)')
    .option('--audience <aud>', 'CI: the audience to ask GitHub Actions for (a trust policy\'s audience)', 'gatehouse')
    .option('--token-env <var>', 'CI: read the ID token from this environment variable (default: GATEHOUSE_ID_TOKEN, then CI_JOB_JWT_V2)')
    .option('--json', 'print the whole answer (token, identity, expiry, …) as JSON')
    .action(async (opts: LoginOptions, cmd: Command) => {
      const exchange = opts.oidcToken !== undefined || opts.ci || opts.tokenEnv !== undefined || (opts.provider === undefined && inCi(process.env));
      if (exchange) await exchangeCiToken(client(cmd), opts);
      else await signInPerson(client(cmd), opts);
    });

  program.command('logout').description('sign out: revoke the token gatehouse login stored for this gateway, and forget it')
    .action(async (_opts: unknown, cmd: Command) => {
      const api = client(cmd);
      const stored = storedCredential(api.gateway);
      if (!stored) throw new Error(`not signed in to ${api.gateway} (nothing in ${credentialsPath()})`);
      const { gateway } = api;
      try {
        // The stored token, whatever GATEHOUSE_TOKEN says: it is the one being given up.
        await new ApiClient({ gateway, token: stored.token, trust: api.trust }).post('/api/v1/logout', {});
      } catch (err) {
        // An expired or revoked token is signed out already; anything else keeps it, to try again.
        if (!/invalid token|token (expired|revoked|not recognised)/.test((err as Error).message)) throw err;
      }
      removeCredential(gateway);
      console.error(`signed out of ${gateway}: ${stored.identity}'s token is revoked and forgotten`);
    });
}

async function signInPerson(api: ApiClient, opts: LoginOptions): Promise<void> {
  const out = await signInWithBrowser(api, { provider: opts.provider, openBrowser: opts.browser, say: (line) => console.error(line) });
  saveCredential(api.gateway, { token: out.token, identity: out.identity.name, expiresAt: out.expiresAt, provider: opts.provider,
    // The certificate this sign-in went to: later commands to this gateway accept only it.
    ...(api.trust.fingerprint ? { gatewayFingerprint: api.trust.fingerprint } : {}) });
  if (opts.json) {
    console.log(JSON.stringify(out, null, 2));
    return;
  }
  const groups = out.identity.externalGroups ?? out.identity.groups ?? [];
  console.error(visible(`signed in as ${out.identity.name} (${out.identity.kind}) until ${out.expiresAt}${groups.length ? `; groups: ${groups.join(', ')}` : ''}`));
  console.error(`the token is stored in ${credentialsPath()}; gatehouse commands use it, and psql, ssh and git take it as the password of user ${out.identity.name} (--print-token prints it)`);
  if (opts.printToken) console.log(out.token);
}

async function exchangeCiToken(api: ApiClient, opts: LoginOptions): Promise<void> {
  if (opts.oidcToken !== undefined && (opts.ci || opts.tokenEnv)) throw new Error('give either --oidc-token or --ci/--token-env');
  let oidcToken: string;
  if (opts.oidcToken === '-') oidcToken = readFileSync(0, 'utf8').trim();
  else if (opts.oidcToken !== undefined) oidcToken = opts.oidcToken;
  else {
    const found = await findCiOidcToken({ audience: opts.audience, tokenEnv: opts.tokenEnv, env: process.env });
    console.error(`using the OIDC token from ${found.source}`);
    oidcToken = found.token;
  }
  const out = await api.request<ExchangeOut>('POST', '/api/v1/auth/oidc-token', { token: oidcToken }, true);
  if (opts.json) {
    console.log(JSON.stringify(out, null, 2));
    return;
  }
  console.error(`signed in as ${out.identity.name} (${out.identity.kind}) by policy "${out.policy}" until ${out.expiresAt}` +
    (out.granted.length ? `; may connect to ${out.granted.join(', ')}` : ''));
  // The token goes to stdout only, so that CI logs of stderr never hold it.
  console.error(`use it: export GATEHOUSE_TOKEN=<the token printed on stdout>; it is the password of user ${out.identity.name} for psql, ssh and git`);
  console.log(out.token);
}
