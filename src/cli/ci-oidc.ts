// Finds the OIDC ID token a CI platform gives the running job: GitHub Actions hands out tokens on
// request (for an audience we choose); GitLab CI puts the ID tokens a job declares in environment
// variables (their audience is set in .gitlab-ci.yml).

export interface FoundToken { token: string; source: string }

export interface CiTokenOptions {
  audience: string;
  /** Read the token from this variable (explicitly asked for: nothing else is tried). */
  tokenEnv?: string;
  env: NodeJS.ProcessEnv;
  timeoutMs?: number;
}

/** Variables tried in order when no --token-env is given: ours, then GitLab's older predefined one. */
export const DEFAULT_TOKEN_ENVS = ['GATEHOUSE_ID_TOKEN', 'CI_JOB_JWT_V2'];

export async function findCiOidcToken(opts: CiTokenOptions): Promise<FoundToken> {
  const { env } = opts;
  if (opts.tokenEnv) {
    const token = env[opts.tokenEnv];
    if (!token) throw new Error(`environment variable ${opts.tokenEnv} is not set`);
    return { token, source: `environment variable ${opts.tokenEnv}` };
  }
  if (env.ACTIONS_ID_TOKEN_REQUEST_URL && env.ACTIONS_ID_TOKEN_REQUEST_TOKEN) {
    return { token: await requestGithubToken(env.ACTIONS_ID_TOKEN_REQUEST_URL, env.ACTIONS_ID_TOKEN_REQUEST_TOKEN, opts.audience, opts.timeoutMs ?? 10_000), source: 'GitHub Actions' };
  }
  for (const name of DEFAULT_TOKEN_ENVS) {
    const token = env[name];
    if (token) return { token, source: `environment variable ${name}` };
  }
  if (env.GITHUB_ACTIONS === 'true') throw new Error('GitHub Actions offers this job no ID token: give the workflow or job "permissions: id-token: write"');
  if (env.GITLAB_CI === 'true') throw new Error(`GitLab CI: declare an ID token for the job ("id_tokens: GATEHOUSE_ID_TOKEN: aud: ${opts.audience}")`);
  throw new Error(`no OIDC token: pass --oidc-token TOKEN, --token-env VAR, or run in GitHub Actions or GitLab CI (${DEFAULT_TOKEN_ENVS.join(' or ')})`);
}

/** GitHub's ID token endpoint: GET <request URL>&audience=…, authorized by the job's request token. */
async function requestGithubToken(requestUrl: string, requestToken: string, audience: string, timeoutMs: number): Promise<string> {
  const url = new URL(requestUrl);
  url.searchParams.set('audience', audience);
  let res: Response;
  try {
    res = await fetch(url, { headers: { authorization: `Bearer ${requestToken}`, accept: 'application/json' }, signal: AbortSignal.timeout(timeoutMs) });
  } catch (err) {
    throw new Error(`cannot reach GitHub's ID token endpoint: ${(err as Error).name === 'TimeoutError' ? `no answer within ${timeoutMs} ms` : (err as Error).message}`);
  }
  const text = await res.text();
  if (!res.ok) throw new Error(`GitHub's ID token endpoint answered HTTP ${res.status}${text ? `: ${text.slice(0, 200)}` : ''}`);
  let value: unknown;
  try {
    value = (JSON.parse(text) as { value?: unknown }).value;
  } catch {
    throw new Error('GitHub\'s ID token endpoint answered something that is not JSON');
  }
  if (typeof value !== 'string' || value === '') throw new Error('GitHub\'s ID token endpoint answered without a token');
  return value;
}
