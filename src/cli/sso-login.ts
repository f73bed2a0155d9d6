// A person's `gatehouse login`: the gateway starts a sign-in, the person finishes it in a browser
// (this terminal prints the link and code, and opens a browser when there is a display), and the
// CLI polls until the gateway hands over a token, or says why not.
import { spawn } from 'node:child_process';
import { hostname } from 'node:os';
import { ApiError, type ApiClient } from './api-client.ts';

interface Started { loginUrl: string; userCode: string; pollToken: string; provider: string; expiresAt: string }
export interface SignedIn { status: 'signed-in'; token: string; identity: { name: string; kind: string; externalGroups?: string[]; groups?: string[] }; expiresAt: string }
type Polled = { status: 'pending'; expiresAt: string } | SignedIn;

export interface BrowserSignInOptions {
  provider?: string;
  /** Try to open a browser (only where there is a display). */
  openBrowser: boolean;
  /** Where the instructions go (stderr: stdout may be a pipe that wants only the token). */
  say: (line: string) => void;
  pollIntervalMs?: number;
}

const NO_SSO = /no identity providers for people to sign in with/;

export async function signInWithBrowser(client: ApiClient, opts: BrowserSignInOptions): Promise<SignedIn> {
  let started: Started;
  try {
    started = await client.request<Started>('POST', '/api/v1/login/start', { ...(opts.provider ? { provider: opts.provider } : {}), host: hostname().slice(0, 253) || 'unknown' }, true);
  } catch (err) {
    if (err instanceof ApiError && err.status === 404 && NO_SSO.test(err.message)) {
      throw new Error(`${err.message}; a CI job or agent run signs in with --oidc-token TOKEN, --token-env VAR, or --ci`);
    }
    throw err;
  }
  opts.say(`To sign in through ${started.provider}, open this link in a browser:\n\n    ${started.loginUrl}\n\n` +
    `or go to ${client.gateway}/login and enter the code ${started.userCode}.\n` +
    `After you sign in there, the browser asks for this code (${started.userCode}) to confirm it was you who started this.\n` +
    `Never type a code you did not see here. Waiting (until ${started.expiresAt}) …`);
  if (opts.openBrowser) openBrowser(started.loginUrl);

  let unreachable = 0;
  for (;;) {
    await new Promise((r) => setTimeout(r, opts.pollIntervalMs ?? 1000));
    let polled: Polled;
    try {
      polled = await client.request<Polled>('POST', '/api/v1/login/poll', { pollToken: started.pollToken }, true);
    } catch (err) {
      // A gateway restarting (or a blip) does not end the sign-in; the sign-in lives in its store.
      if (err instanceof ApiError && err.status === 0 && ++unreachable < 10) continue;
      throw err;
    }
    unreachable = 0;
    if (polled.status === 'signed-in') return polled;
  }
}

/** Best effort: a desktop's browser, never required (the link is printed either way). */
function openBrowser(url: string): void {
  const opener = process.platform === 'darwin' ? 'open'
    : process.platform === 'linux' && (process.env.DISPLAY || process.env.WAYLAND_DISPLAY) ? 'xdg-open' : undefined;
  if (!opener) return;
  try {
    const child = spawn(opener, [url], { stdio: 'ignore', detached: true });
    child.on('error', () => {});
    child.unref();
  } catch { /* the printed link is enough */ }
}
