// Management commands: identities, tokens, connections, SSH keys (groups and grants: access.ts).
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline/promises';
import type { Command } from 'commander';
import { MAX_TOKEN_TTL_S, parseDuration } from '../../util/duration.ts';
import { CONNECTION_TYPES, IDENTITY_KINDS } from '../../store/types.ts';
import { table } from '../format.ts';
import type { ApiClient } from '../api-client.ts';

type ClientFactory = (cmd: Command) => ApiClient;

interface IdentityOut { name: string; kind: string; admin: boolean; createdAt: string }
interface TokenOut { id: string; identity: string; createdAt: string; expiresAt: string; state: string; token?: string }
interface ConnectionOut { name: string; type: string; host: string; port: number; database: string; user: string; hasPassword: boolean; createdAt: string; options: { hostKey?: string; tls?: boolean; basePath?: string } }
interface ConnectionAddOptions {
  type: string; host: string; port?: string; database?: string; user?: string; passwordEnv?: string; passwordFile?: string;
  keyFile?: string; hostKey: string[]; hostKeyFile: string[]; hostKeyFingerprint: string[]; allowForwarding: string[]; allowEnv: string[]; protect: string[]; gitOnly?: boolean;
  tls?: boolean; basePath: string; sslmode?: string; sslrootcert?: string; requireAuth?: string; recording: string; retention?: string; maxSession?: string; via: string[];
}

function describeTarget(c: ConnectionOut): string {
  if (c.type === 'postgres') return `${c.user}@${c.host}:${c.port}/${c.database}`;
  if (c.type === 'git-http') return `${c.options.tls ? 'https' : 'http'}://${c.host}:${c.port}${c.options.basePath ?? ''}`;
  return `${c.user}@${c.host}:${c.port}`;
}

/**
 * Trust on first use, made explicit: the gateway fetches the target's host keys (through the path
 * sessions will take) and the operator confirms them, interactively or with --host-key-fingerprint
 * (which pins only the keys named). Nothing is pinned without that confirmation.
 */
async function confirmHostKeys(api: ApiClient, opts: ConnectionAddOptions): Promise<string> {
  const port = Number(opts.port ?? 22);
  const probed = await api.post<{ hostKeys: Array<{ type: string; hostKey: string; fingerprint: string }> }>('/api/v1/ssh/host-key', { host: opts.host, port, ...(opts.via.length ? { via: opts.via } : {}) });
  console.error(`The host keys of ${opts.host}:${port} are:`);
  for (const k of probed.hostKeys) console.error(`  ${k.type} ${k.fingerprint}`);
  if (opts.hostKeyFingerprint.length > 0) {
    const unknown = opts.hostKeyFingerprint.filter((fp) => !probed.hostKeys.some((k) => k.fingerprint === fp));
    if (unknown.length > 0) throw new Error(`the target has no host key ${unknown.join(', ')} (does not match --host-key-fingerprint); nothing was created`);
    return probed.hostKeys.filter((k) => opts.hostKeyFingerprint.includes(k.fingerprint)).map((k) => k.hostKey).join('\n');
  }
  if (!process.stdin.isTTY) throw new Error('confirm one with --host-key-fingerprint (or pass --host-key); nothing was created');
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  const answer = await rl.question(`Pin ${probed.hostKeys.length === 1 ? 'this host key' : `these ${probed.hostKeys.length} host keys`}? [y/N] `);
  rl.close();
  if (!/^y(es)?$/i.test(answer.trim())) throw new Error('host key not confirmed; nothing was created');
  return probed.hostKeys.map((k) => k.hostKey).join('\n');
}

/** --host-key values and --host-key-file contents, one pin per line (the gateway checks them). */
function givenHostKeys(opts: ConnectionAddOptions): string | undefined {
  const lines = [...opts.hostKey, ...opts.hostKeyFile.map((f) => readFileSync(f, 'utf8'))];
  return lines.length > 0 ? lines.join('\n') : undefined;
}

const enc = encodeURIComponent;

function durationOption(flag: string, text: string): number {
  try {
    return parseDuration(text);
  } catch (err) {
    throw new Error(`${flag}: ${(err as Error).message}`);
  }
}

export function registerManagement(program: Command, client: ClientFactory): void {
  const identity = program.command('identity').description('identities: people, services and agents');
  identity.command('add <name>').description('create an identity')
    .requiredOption('--kind <kind>', 'agent, human or service')
    .action(async (name: string, opts: { kind: string }, cmd: Command) => {
      if (!(IDENTITY_KINDS as readonly string[]).includes(opts.kind)) {
        throw new Error(`invalid --kind "${opts.kind}": use one of ${IDENTITY_KINDS.join(', ')}`);
      }
      const out = await client(cmd).post<IdentityOut>('/api/v1/identities', { name, kind: opts.kind });
      console.log(`identity ${out.name} (${out.kind}) created`);
    });
  identity.command('list').description('list identities').option('--json', 'machine-readable output')
    .action(async (opts: { json?: boolean }, cmd: Command) => {
      const rows = await client(cmd).get<IdentityOut[]>('/api/v1/identities');
      console.log(opts.json ? JSON.stringify(rows, null, 2) : table(['NAME', 'KIND', 'ADMIN', 'CREATED'], rows.map((i) => [i.name, i.kind, i.admin ? 'yes' : '', i.createdAt])));
    });
  identity.command('rm <name>').description('delete an identity (its tokens and grants go with it)')
    .action(async (name: string, _opts: unknown, cmd: Command) => {
      await client(cmd).delete(`/api/v1/identities/${enc(name)}`);
      console.log(`identity ${name} deleted`);
    });

  const token = program.command('token').description('short-lived tokens (stored only as hashes)');
  token.command('issue <identity>').description('issue a token; the token is printed as the last line')
    .option('--ttl <duration>', 'lifetime, e.g. 15m, 1h, 7d (at most 90d)', '1h')
    .action(async (name: string, opts: { ttl: string }, cmd: Command) => {
      let ttlSeconds: number;
      try {
        ttlSeconds = parseDuration(opts.ttl, MAX_TOKEN_TTL_S);
      } catch (err) {
        throw new Error(`--ttl: ${(err as Error).message}`);
      }
      const out = await client(cmd).post<TokenOut>(`/api/v1/identities/${enc(name)}/tokens`, { ttlSeconds });
      console.error(`token ${out.id} for ${out.identity}, expires ${out.expiresAt}`);
      console.log(out.token);
    });
  token.command('list').description('list tokens (ids and state, never the tokens)')
    .option('--identity <name>', 'only this identity').option('--json', 'machine-readable output')
    .action(async (opts: { identity?: string; json?: boolean }, cmd: Command) => {
      const rows = await client(cmd).get<TokenOut[]>(`/api/v1/tokens${opts.identity ? `?identity=${enc(opts.identity)}` : ''}`);
      console.log(opts.json ? JSON.stringify(rows, null, 2) : table(['ID', 'IDENTITY', 'STATE', 'CREATED', 'EXPIRES'], rows.map((t) => [t.id, t.identity, t.state, t.createdAt, t.expiresAt])));
    });
  token.command('revoke [idOrToken]').description('revoke a token by id (tok_…) or by the token itself (ght_…)')
    .option('--identity <name>', 'revoke every token of this identity')
    .action(async (idOrToken: string | undefined, opts: { identity?: string }, cmd: Command) => {
      let body: Record<string, string>;
      if (opts.identity) body = { identity: opts.identity };
      else if (idOrToken?.startsWith('ght_')) body = { token: idOrToken };
      else if (idOrToken) body = { id: idOrToken };
      else throw new Error('give a token id, a token, or --identity NAME');
      const out = await client(cmd).post<{ revoked: number }>('/api/v1/tokens/revoke', body);
      console.log(`${out.revoked} token${out.revoked === 1 ? '' : 's'} revoked`);
    });

  const connection = program.command('connection').description('targets the gateway can reach');
  const repeat = (v: string, acc: string[]) => [...acc, ...v.split(',').map((x) => x.trim()).filter(Boolean)];
  connection.command('add <name>').description('register a target')
    .requiredOption('--type <type>', 'postgres, ssh or git-http')
    .requiredOption('--host <host>', 'target host')
    .option('--port <port>', 'target port (default: 5432, 22, or 80/443 for git-http)')
    .option('--database <db>', 'postgres: target database')
    .option('--user <user>', 'user the gateway logs in as')
    .option('--password-env <var>', 'read the target password from this environment variable')
    .option('--password-file <file>', 'read the target password from this file')
    .option('--key-file <file>', 'ssh: private key the gateway logs in with')
    .option('--host-key <line>', 'ssh: pin this host key ("ssh-ed25519 AAAA…", a known_hosts line, or SHA256:… of one of the target\'s keys; repeatable); without it the keys are fetched and shown for confirmation', (v: string, acc: string[]) => [...acc, v], [] as string[])
    .option('--host-key-file <file>', 'ssh: pin the host keys in this known_hosts or ssh-keyscan output file (repeatable)', (v: string, acc: string[]) => [...acc, v], [] as string[])
    .option('--host-key-fingerprint <fp>', 'ssh: confirm the fetched host key with this fingerprint non-interactively (SHA256:…; repeatable)', (v: string, acc: string[]) => [...acc, v], [] as string[])
    .option('--allow-forwarding <kinds>', 'ssh: allow local, remote and/or agent forwarding (comma-separated; default: none)', repeat, [] as string[])
    .option('--allow-env <glob>', 'ssh: environment variables clients may set (repeatable; default GIT_PROTOCOL, LANG, LC_*)', repeat, [] as string[])
    .option('--protect <glob>', 'git: refs that may not be deleted or rewritten, e.g. refs/heads/main (repeatable)', (v: string, acc: string[]) => [...acc, v], [] as string[])
    .option('--git-only', 'ssh: only Git fetch/push/archive may run; shells, other commands, SFTP and forwarding are refused (default with --protect)')
    .option('--no-git-only', 'ssh: with --protect, still allow shells and other commands (ref protection is then advisory)')
    .option('--tls', 'git-http: the target speaks HTTPS')
    .option('--base-path <path>', 'git-http: path prefix of the repositories on the target', '')
    .option('--sslmode <mode>', 'postgres: TLS to the target: require (default), verify-ca, verify-full (default with --sslrootcert), or disable')
    .option('--sslrootcert <file>', 'postgres: CA certificate (PEM) the target\'s certificate must chain to')
    .option('--require-auth <methods>', 'postgres: methods the target may ask for: scram-sha-256, md5, password, none (comma-separated; default scram-sha-256, or none without a credential)')
    .option('--recording <mode>', 'durable (a command runs only once recorded; refused when the store is down) or best-effort', 'durable')
    .option('--retention <duration>', 'remove recordings this long after their session ends, e.g. 90d (default: keep)')
    .option('--max-session <duration>', 'end sessions this long after they start, e.g. 8h (default: while the token is valid)')
    .option('--via <connector>', 'reach the target through this connector (repeatable; any healthy one is used)', repeat, [] as string[])
    .action(async (name: string, opts: ConnectionAddOptions, cmd: Command) => {
      let password: string | undefined;
      if (opts.passwordEnv) {
        password = process.env[opts.passwordEnv];
        if (password === undefined) throw new Error(`environment variable ${opts.passwordEnv} is not set`);
      } else if (opts.passwordFile) {
        password = readFileSync(opts.passwordFile, 'utf8').replace(/\r?\n$/, '');
      }
      if (!(CONNECTION_TYPES as readonly string[]).includes(opts.type)) throw new Error(`invalid --type "${opts.type}": use one of ${CONNECTION_TYPES.join(', ')}`);
      const defaultPort = { postgres: 5432, ssh: 22, 'git-http': opts.tls ? 443 : 80 }[opts.type] ?? 0;
      const port = Number(opts.port ?? defaultPort);
      if (!Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`invalid --port "${opts.port}": a number from 1 to 65535`);
      const api = client(cmd);
      const body: Record<string, unknown> = {
        name, type: opts.type, host: opts.host, port, recording: opts.recording,
        ...(opts.user ? { user: opts.user } : {}), ...(password !== undefined ? { password } : {}),
        ...(opts.retention ? { retentionSeconds: parseDuration(opts.retention) } : {}),
        ...(opts.maxSession ? { maxSessionSeconds: durationOption('--max-session', opts.maxSession) } : {}),
        ...(opts.via.length > 0 ? { via: opts.via } : {}),
        ...(opts.protect.length > 0 ? { protect: opts.protect } : {}),
      };
      if (opts.type === 'postgres') {
        Object.assign(body, { database: opts.database });
        if (opts.sslmode) body.sslmode = opts.sslmode;
        if (opts.sslrootcert) body.sslRootCert = readFileSync(opts.sslrootcert, 'utf8');
        if (opts.requireAuth) body.requireAuth = opts.requireAuth.split(',').map((m) => m.trim()).filter(Boolean);
      }
      if (opts.type === 'git-http') Object.assign(body, { tls: Boolean(opts.tls), basePath: opts.basePath });
      if (opts.type === 'ssh') {
        if (opts.keyFile) body.privateKey = readFileSync(opts.keyFile, 'utf8');
        if (opts.allowForwarding.length > 0) body.allowForwarding = opts.allowForwarding;
        if (opts.allowEnv.length > 0) body.allowEnv = opts.allowEnv;
        if (opts.gitOnly !== undefined) body.gitOnly = opts.gitOnly;
        body.hostKey = givenHostKeys(opts) ?? await confirmHostKeys(api, opts);
      }
      const out = await api.post<ConnectionOut>('/api/v1/connections', body);
      console.log(`connection ${out.name} (${out.type}) → ${describeTarget(out)} created${out.hasPassword ? ' (credential encrypted at rest)' : ''}`);
    });
  connection.command('list').description('list connections').option('--json', 'machine-readable output')
    .action(async (opts: { json?: boolean }, cmd: Command) => {
      const rows = await client(cmd).get<ConnectionOut[]>('/api/v1/connections');
      console.log(opts.json ? JSON.stringify(rows, null, 2) : table(['NAME', 'TYPE', 'TARGET', 'CREDENTIAL', 'CREATED'],
        rows.map((c) => [c.name, c.type, describeTarget(c), c.hasPassword ? 'stored' : 'none', c.createdAt])));
    });
  connection.command('rm <name>').description('remove a connection (its grants go with it; recordings stay)')
    .action(async (name: string, _opts: unknown, cmd: Command) => {
      await client(cmd).delete(`/api/v1/connections/${enc(name)}`);
      console.log(`connection ${name} removed`);
    });

  const key = program.command('key').description('SSH public keys identities sign in with');
  key.command('add <identity> <pubkeyFile>').description('register an SSH public key (.pub file) to an identity')
    .action(async (identityName: string, file: string, _opts: unknown, cmd: Command) => {
      const out = await client(cmd).post<{ fingerprint: string }>(`/api/v1/identities/${enc(identityName)}/keys`, { publicKey: readFileSync(file, 'utf8') });
      console.log(`key ${out.fingerprint} registered to ${identityName}`);
    });
  key.command('list').description('list registered SSH public keys').option('--identity <name>', 'only this identity').option('--json', 'machine-readable output')
    .action(async (opts: { identity?: string; json?: boolean }, cmd: Command) => {
      const rows = await client(cmd).get<Array<{ identity: string; fingerprint: string; publicKey: string; createdAt: string }>>(`/api/v1/keys${opts.identity ? `?identity=${enc(opts.identity)}` : ''}`);
      console.log(opts.json ? JSON.stringify(rows, null, 2) : table(['IDENTITY', 'FINGERPRINT', 'TYPE', 'ADDED'], rows.map((k) => [k.identity, k.fingerprint, k.publicKey.split(' ')[0]!, k.createdAt])));
    });
  key.command('rm <fingerprint>').description('remove a registered key (SHA256:…)')
    .action(async (fingerprint: string, _opts: unknown, cmd: Command) => {
      await client(cmd).delete(`/api/v1/keys/${enc(fingerprint)}`);
      console.log(`key ${fingerprint} removed`);
    });
}
