// `gatehouse login`: a CI job or agent run trades its platform's OIDC token for a short-lived
// gatehouse token of a run identity of its own.
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import type { ApiClient } from '../api-client.ts';
import { findCiOidcToken } from '../ci-oidc.ts';

type ClientFactory = (cmd: Command) => ApiClient;

interface LoginOptions { oidcToken?: string; ci?: boolean; audience: string; tokenEnv?: string; json?: boolean }
interface ExchangeOut { token: string; identity: { name: string; kind: string }; expiresAt: string; policy: string; granted: string[] }

export function registerLogin(program: Command, client: ClientFactory): void {
  program.command('login').description('exchange a CI job\'s or agent run\'s OIDC token for a gatehouse token (printed as the last line)')
    .option('--oidc-token <jwt>', 'the OIDC ID token ("-": read it from stdin); without it the CI environment is searched')
    .option('--ci', 'take the token from the CI environment: GitHub Actions (id-token: write), GitLab CI (id_tokens)')
    .option('--audience <aud>', 'the audience to ask GitHub Actions for (a trust policy\'s audience)', 'gatehouse')
    .option('--token-env <var>', 'read the ID token from this environment variable (default: GATEHOUSE_ID_TOKEN, then CI_JOB_JWT_V2)')
    .option('--json', 'print the whole answer (token, identity, expiry, policy) as JSON')
    .action(async (opts: LoginOptions, cmd: Command) => {
      if (opts.oidcToken !== undefined && (opts.ci || opts.tokenEnv)) throw new Error('give either --oidc-token or --ci/--token-env');
      let oidcToken: string;
      if (opts.oidcToken === '-') oidcToken = readFileSync(0, 'utf8').trim();
      else if (opts.oidcToken !== undefined) oidcToken = opts.oidcToken;
      else {
        const found = await findCiOidcToken({ audience: opts.audience, tokenEnv: opts.tokenEnv, env: process.env });
        console.error(`using the OIDC token from ${found.source}`);
        oidcToken = found.token;
      }
      const out = await client(cmd).request<ExchangeOut>('POST', '/api/v1/auth/oidc-token', { token: oidcToken }, true);
      if (opts.json) {
        console.log(JSON.stringify(out, null, 2));
        return;
      }
      console.error(`signed in as ${out.identity.name} (${out.identity.kind}) by policy "${out.policy}" until ${out.expiresAt}` +
        (out.granted.length ? `; may connect to ${out.granted.join(', ')}` : ''));
      // The token goes to stdout only, so that CI logs of stderr never hold it.
      console.error(`use it: export GATEHOUSE_TOKEN=<the token printed on stdout>; it is the password of user ${out.identity.name} for psql, ssh and git`);
      console.log(out.token);
    });
}
