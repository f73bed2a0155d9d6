// Tokens people got by signing in (`gatehouse login`), kept per gateway so that later commands
// need no GATEHOUSE_TOKEN: ~/.config/gatehouse/credentials.json (or $GATEHOUSE_CONFIG_DIR), 0600.
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import path from 'node:path';

/** gatewayFingerprint: the certificate pinned when signing in, used by later commands to that gateway. */
export interface StoredCredential { token: string; identity: string; expiresAt: string; provider?: string; gatewayFingerprint?: string }

interface CredentialsFile {
  /** The gateway signed in to last: used when no --gateway or GATEHOUSE_URL names one. */
  default?: string;
  gateways: Record<string, StoredCredential>;
}

export function credentialsPath(env: NodeJS.ProcessEnv = process.env): string {
  const dir = env.GATEHOUSE_CONFIG_DIR || path.join(env.XDG_CONFIG_HOME || path.join(homedir(), '.config'), 'gatehouse');
  return path.join(dir, 'credentials.json');
}

/** Gateways are keyed by URL without trailing slashes. */
export function gatewayKey(url: string): string {
  return url.replace(/\/+$/, '');
}

function read(env: NodeJS.ProcessEnv): CredentialsFile {
  const file = credentialsPath(env);
  if (!existsSync(file)) return { gateways: {} };
  try {
    const parsed = JSON.parse(readFileSync(file, 'utf8')) as Partial<CredentialsFile>;
    return { default: parsed.default, gateways: parsed.gateways ?? {} };
  } catch (err) {
    throw new Error(`cannot read ${file}: ${(err as Error).message} (remove it and sign in again)`);
  }
}

function write(data: CredentialsFile, env: NodeJS.ProcessEnv): void {
  const file = credentialsPath(env);
  mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  // Written aside and renamed: a crash never leaves half a file, and the token is never world-readable.
  const temp = `${file}.${process.pid}.tmp`;
  writeFileSync(temp, JSON.stringify(data, null, 2) + '\n', { mode: 0o600 });
  chmodSync(temp, 0o600);
  renameSync(temp, file);
}

export function saveCredential(gateway: string, credential: StoredCredential, env: NodeJS.ProcessEnv = process.env): void {
  const data = read(env);
  data.gateways[gatewayKey(gateway)] = credential;
  data.default = gatewayKey(gateway);
  write(data, env);
}

export function removeCredential(gateway: string, env: NodeJS.ProcessEnv = process.env): StoredCredential | undefined {
  const data = read(env);
  const key = gatewayKey(gateway);
  const removed = data.gateways[key];
  if (!removed) return undefined;
  delete data.gateways[key];
  if (data.default === key) delete data.default;
  write(data, env);
  return removed;
}

export function storedCredential(gateway: string, env: NodeJS.ProcessEnv = process.env): StoredCredential | undefined {
  return read(env).gateways[gatewayKey(gateway)];
}


/** The gateway signed in to last, for commands that name none; a damaged file is ignored here (login says so). */
export function signedInGateway(env: NodeJS.ProcessEnv = process.env): string | undefined {
  try {
    return read(env).default;
  } catch {
    return undefined;
  }
}

/** The stored token for `gateway`, unless it has expired. */
export function signedInToken(gateway: string, env: NodeJS.ProcessEnv = process.env, now = Date.now()): string | undefined {
  try {
    const credential = read(env).gateways[gatewayKey(gateway)];
    return credential && Date.parse(credential.expiresAt) > now ? credential.token : undefined;
  } catch {
    return undefined;
  }
}
