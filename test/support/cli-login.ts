// `gatehouse login` as a person runs it: a real CLI process that prints a link and a code, then
// waits for the browser side. Tests read the link from its output, play the browser, and await
// its exit.
import { spawn } from 'node:child_process';
import { GATEHOUSE_BIN } from './gateway.ts';
import type { RunResult } from './processes.ts';
import { pageText, type Browser, type Page } from './browser.ts';

export interface CliLogin {
  /** The sign-in link and code, once printed. */
  link: Promise<{ url: string; code: string }>;
  exit: Promise<RunResult>;
}

/** The test runner's environment without anything that would make the CLI sign in otherwise. */
export function personEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  const drop = /^(GATEHOUSE_|GITHUB_ACTIONS$|GITLAB_CI$|ACTIONS_ID_TOKEN_|CI_JOB_JWT|DISPLAY$|WAYLAND_DISPLAY$)/;
  for (const [k, v] of Object.entries(process.env)) if (!drop.test(k)) env[k] = v;
  return { ...env, ...extra };
}

export function startCliLogin(args: string[], env: NodeJS.ProcessEnv, timeoutMs = 30_000): CliLogin {
  const child = spawn(process.execPath, [GATEHOUSE_BIN, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  let announce: (v: { url: string; code: string }) => void;
  let fail: (err: Error) => void;
  const link = new Promise<{ url: string; code: string }>((resolve, reject) => { announce = resolve; fail = reject; });
  link.catch(() => {}); // a login refused before printing a link is asserted through `exit`
  child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
  child.stderr.on('data', (d: Buffer) => {
    stderr += d.toString();
    const m = /open this link in a browser:\s+(\S+)[\s\S]*enter the code ([A-Z]{4}-[A-Z]{4})/.exec(stderr);
    if (m) announce({ url: m[1], code: m[2] });
  });
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  const exit = new Promise<RunResult>((resolve) => {
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      fail(new Error(`gatehouse login exited (${code}) without printing a link:\n${stderr}`));
      resolve({ code, signal, stdout, stderr });
    });
  });
  return { link, exit };
}

/**
 * The person's last step in the browser: the confirmation page (where the sign-in started, and a
 * field for the terminal's code) filled in with `code`, or cancelled.
 */
export async function confirmSignIn(browser: Browser, page: Page, code: string, action: 'confirm' | 'cancel' = 'confirm'): Promise<Page> {
  if (!/Confirm this sign-in/.test(page.body)) throw new Error(`expected the confirmation page at ${page.url} (${page.status}):\n${pageText(page.body).slice(0, 800)}`);
  return browser.submit(page, browser.form(page, '/login/confirm'), { code, action });
}
