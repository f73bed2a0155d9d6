// Gateway configuration: built-in defaults, then gatehouse.yaml, then GATEHOUSE_* environment
// variables, then command-line flags — later sources win.
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { parseListenAddress, type ListenAddress } from '../util/address.ts';
import { defaultWorkloadIdentityConfig, parseWorkloadIdentity, type WorkloadIdentityConfig } from '../identity/workload/config.ts';
import { defaultSsoConfig, parseSso, type SsoConfig } from '../identity/sso/config.ts';
import { applyAuthLimits, defaultAuthLimits } from '../access/auth-limits-config.ts';
import { applyPushLimits, type PushLimits } from '../engines/git/push-limits.ts';
import type { AuthLimits } from '../access/auth-throttle.ts';
import { defaultApiTlsSettings, parseApiTlsMode, parseHttpSection, type ApiTlsSettings } from '../tls/api-tls.ts';

export interface GatewayConfig {
  dataDir: string;
  http: ListenAddress;
  /** TLS on the API listener (src/tls/api-tls.ts): on by itself unless it listens on loopback. */
  httpTls: ApiTlsSettings;
  pg: ListenAddress;
  /** SSH listener (shells, commands, file transfers, Git over SSH). */
  ssh: ListenAddress;
  /** Where connectors' tunnels arrive, and the address connectors are told to dial. */
  connectorListen: ListenAddress;
  connectorPublicAddress?: ListenAddress;
  tls: { cert?: string; key?: string };
  /** Preset admin token (automation); otherwise one is generated on first start and printed once. */
  adminToken?: string;
  /** AES-256 key for target credentials (hex or base64); otherwise a key file in the data dir. */
  secretKey?: string;
  logLevel: string;
  /** HTTP API timeouts and body limit (see ApiLimits in src/api/server.ts). */
  api: { headersTimeoutMs: number; requestTimeoutMs: number; keepAliveTimeoutMs: number; bodyLimitBytes: number };
  recording: {
    sampleRows: number; sampleBytes: number; writer: 'inline' | 'thread' | 'overlapped' | 'journal'; journalBytes: number; fsync: boolean; checkpointIntervalMs: number;
    /** Unwritten events held in memory while the store is down; beyond that they give way to signed gap markers. */
    maxRetainedEvents: number;
  };
  /** Ed25519 private key (PEM) for checkpoints and seals; otherwise keys in <data_dir>/signing. */
  signingKeyFile?: string;
  /**
   * recordedTextBytes: statement text kept in the recording; a longer statement is recorded as
   * its first bytes plus its length and SHA-256.
   */
  postgres: { maxMessageBytes: number; authTimeoutMs: number; allowLoopbackCleartext: boolean; recordedTextBytes: number };
  /** Guarded Git pushes: the most a push may make the gateway hold, and where it is spooled (`git:`). */
  gitPush: PushLimits;
  /** Failed sign-ins per address, on every listener (src/access/auth-throttle.ts). */
  authLimit: AuthLimits;
  /** Held actions (docs/policy.md): a URL that gets a JSON POST for each new request and each decision. */
  approvals: { webhookUrl?: string };
  /** Shared PostgreSQL store (postgres://…); otherwise the embedded SQLite store in the data directory. */
  store?: string;
  /**
   * The gateway's lease on the sessions it records (a store shared by several gateways): renewed
   * every heartbeatMs; a gateway that has not renewed it for durationMs is taken for dead, and
   * another takes over and seals its open sessions.
   */
  lease: { durationMs: number; heartbeatMs: number };
  /** Trust policies for exchanging CI jobs' and agent runs' OIDC tokens (gatehouse.yaml only). */
  workloadIdentity: WorkloadIdentityConfig;
  /** Identity providers people sign in with (OIDC, SAML; gatehouse.yaml only). */
  sso: SsoConfig;
}

export interface ConfigFlags {
  config?: string;
  dataDir?: string;
  http?: string;
  pg?: string;
  ssh?: string;
  connectorListen?: string;
  tlsCert?: string;
  tlsKey?: string;
  /** auto, on or off. */
  httpTls?: string;
  httpAllowPlaintext?: boolean;
  logLevel?: string;
  store?: string;
}

export function defaultConfig(): GatewayConfig {
  return {
    dataDir: './.gatehouse',
    http: { host: '127.0.0.1', port: 8080 },
    httpTls: defaultApiTlsSettings(),
    pg: { host: '127.0.0.1', port: 15432 },
    ssh: { host: '127.0.0.1', port: 2222 },
    connectorListen: { host: '127.0.0.1', port: 8443 },
    tls: {},
    logLevel: 'info',
    api: { headersTimeoutMs: 10_000, requestTimeoutMs: 300_000, keepAliveTimeoutMs: 5_000, bodyLimitBytes: 1024 * 1024 },
    recording: { sampleRows: 100, sampleBytes: 64 * 1024, writer: 'journal', journalBytes: 16 * 1024 * 1024, fsync: true, checkpointIntervalMs: 5000, maxRetainedEvents: 500_000 },
    postgres: { maxMessageBytes: 64 * 1024 * 1024, authTimeoutMs: 30_000, allowLoopbackCleartext: true, recordedTextBytes: 64 * 1024 },
    authLimit: defaultAuthLimits(),
    approvals: {},
    gitPush: { maxPushBytes: 2 * 1024 ** 3, spoolDir: '' }, // spoolDir '' means <data_dir>/spool
    lease: { durationMs: 60_000, heartbeatMs: 10_000 },
    workloadIdentity: defaultWorkloadIdentityConfig(),
    sso: defaultSsoConfig(),
  };
}

type Yaml = Record<string, unknown>;

function num(v: unknown, name: string): number {
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) throw new Error(`config: ${name} must be a non-negative number`);
  return n;
}

function storeUrl(v: string, source: string): string {
  if (!/^postgres(ql)?:\/\//i.test(v)) throw new Error(`config: ${source} must be a postgres:// URL`);
  return v;
}

function applyFile(cfg: GatewayConfig, file: string, env: NodeJS.ProcessEnv): void {
  const doc = (YAML.parse(readFileSync(file, 'utf8')) ?? {}) as Yaml;
  const base = path.dirname(path.resolve(file));
  if (doc.data_dir !== undefined) cfg.dataDir = path.resolve(base, String(doc.data_dir));
  if (doc.http !== undefined) {
    const listen = parseHttpSection(doc.http, base, cfg.httpTls, path.resolve);
    if (listen !== undefined) cfg.http = parseListenAddress(listen);
  }
  if (doc.pg !== undefined) cfg.pg = parseListenAddress(String(doc.pg));
  if (doc.ssh !== undefined) cfg.ssh = parseListenAddress(String(doc.ssh));
  if (doc.connector_listen !== undefined) cfg.connectorListen = parseListenAddress(String(doc.connector_listen));
  if (doc.connector_public_address !== undefined) cfg.connectorPublicAddress = parseListenAddress(String(doc.connector_public_address));
  if (doc.log_level !== undefined) cfg.logLevel = String(doc.log_level);
  if (doc.store !== undefined && doc.store !== null) cfg.store = storeUrl(String(doc.store), 'store');
  const tls = doc.tls as Yaml | undefined;
  if (tls?.cert) cfg.tls.cert = path.resolve(base, String(tls.cert));
  if (tls?.key) cfg.tls.key = path.resolve(base, String(tls.key));
  const rec = doc.recording as Yaml | undefined;
  if (rec?.sample_rows !== undefined) cfg.recording.sampleRows = num(rec.sample_rows, 'recording.sample_rows');
  if (rec?.sample_bytes !== undefined) cfg.recording.sampleBytes = num(rec.sample_bytes, 'recording.sample_bytes');
  if (rec?.writer !== undefined) {
    if (rec.writer !== 'inline' && rec.writer !== 'thread' && rec.writer !== 'overlapped' && rec.writer !== 'journal') throw new Error('config: recording.writer must be inline, overlapped, thread or journal');
    cfg.recording.writer = rec.writer;
  }
  if (rec?.journal_bytes !== undefined) cfg.recording.journalBytes = Math.max(64 * 1024, num(rec.journal_bytes, 'recording.journal_bytes'));
  if (rec?.checkpoint_interval_ms !== undefined) cfg.recording.checkpointIntervalMs = Math.max(100, num(rec.checkpoint_interval_ms, 'recording.checkpoint_interval_ms'));
  const signing = doc.signing as Yaml | undefined;
  if (signing?.key_file) cfg.signingKeyFile = path.resolve(base, String(signing.key_file));
  if (rec?.max_retained_events !== undefined) cfg.recording.maxRetainedEvents = Math.max(1, num(rec.max_retained_events, 'recording.max_retained_events'));
  if (rec?.fsync !== undefined) cfg.recording.fsync = rec.fsync !== false && rec.fsync !== 'false';
  const api = doc.api as Yaml | undefined;
  if (api?.headers_timeout_ms !== undefined) cfg.api.headersTimeoutMs = num(api.headers_timeout_ms, 'api.headers_timeout_ms');
  if (api?.request_timeout_ms !== undefined) cfg.api.requestTimeoutMs = num(api.request_timeout_ms, 'api.request_timeout_ms');
  if (api?.keep_alive_timeout_ms !== undefined) cfg.api.keepAliveTimeoutMs = num(api.keep_alive_timeout_ms, 'api.keep_alive_timeout_ms');
  if (api?.body_limit_bytes !== undefined) cfg.api.bodyLimitBytes = num(api.body_limit_bytes, 'api.body_limit_bytes');
  const lease = doc.lease as Yaml | undefined;
  if (lease?.duration_ms !== undefined) cfg.lease.durationMs = num(lease.duration_ms, 'lease.duration_ms');
  if (lease?.heartbeat_ms !== undefined) cfg.lease.heartbeatMs = num(lease.heartbeat_ms, 'lease.heartbeat_ms');
  const pg = doc.postgres as Yaml | undefined;
  if (pg?.max_message_bytes !== undefined) cfg.postgres.maxMessageBytes = num(pg.max_message_bytes, 'postgres.max_message_bytes');
  if (pg?.auth_timeout_ms !== undefined) cfg.postgres.authTimeoutMs = num(pg.auth_timeout_ms, 'postgres.auth_timeout_ms');
  if (pg?.recorded_text_bytes !== undefined) cfg.postgres.recordedTextBytes = Math.max(1024, num(pg.recorded_text_bytes, 'postgres.recorded_text_bytes'));
  applyAuthLimits(cfg.authLimit, doc.auth_limit, {});
  const approvals = doc.approvals as Yaml | undefined;
  if (approvals?.webhook_url !== undefined) cfg.approvals.webhookUrl = webhookUrl(String(approvals.webhook_url), 'approvals.webhook_url');
  applyPushLimits(cfg.gitPush, doc.git, {}, base);
  if (pg?.allow_loopback_cleartext !== undefined) cfg.postgres.allowLoopbackCleartext = Boolean(pg.allow_loopback_cleartext);
  try {
    if (doc.workload_identity !== undefined) cfg.workloadIdentity = parseWorkloadIdentity(doc.workload_identity);
    if (doc.sso !== undefined) cfg.sso = parseSso(doc.sso, base, env);
  } catch (err) {
    throw new Error(`config: ${(err as Error).message}`);
  }
}

export function loadConfig(flags: ConfigFlags, env: NodeJS.ProcessEnv = process.env): GatewayConfig {
  const cfg = defaultConfig();
  const file = flags.config ?? env.GATEHOUSE_CONFIG ?? (existsSync('gatehouse.yaml') ? 'gatehouse.yaml' : undefined);
  if (file) applyFile(cfg, file, env);
  applyAuthLimits(cfg.authLimit, undefined, env);
  if (env.GATEHOUSE_APPROVALS_WEBHOOK) cfg.approvals.webhookUrl = webhookUrl(env.GATEHOUSE_APPROVALS_WEBHOOK, 'GATEHOUSE_APPROVALS_WEBHOOK');
  applyPushLimits(cfg.gitPush, undefined, env);
  if (env.GATEHOUSE_PG_RECORDED_TEXT_BYTES) cfg.postgres.recordedTextBytes = Math.max(1024, num(env.GATEHOUSE_PG_RECORDED_TEXT_BYTES, 'GATEHOUSE_PG_RECORDED_TEXT_BYTES'));
  if (env.GATEHOUSE_DATA_DIR) cfg.dataDir = env.GATEHOUSE_DATA_DIR;
  if (env.GATEHOUSE_HTTP) cfg.http = parseListenAddress(env.GATEHOUSE_HTTP);
  if (env.GATEHOUSE_PG) cfg.pg = parseListenAddress(env.GATEHOUSE_PG);
  if (env.GATEHOUSE_SSH) cfg.ssh = parseListenAddress(env.GATEHOUSE_SSH);
  if (env.GATEHOUSE_CONNECTOR_LISTEN) cfg.connectorListen = parseListenAddress(env.GATEHOUSE_CONNECTOR_LISTEN);
  if (env.GATEHOUSE_CONNECTOR_PUBLIC_ADDRESS) cfg.connectorPublicAddress = parseListenAddress(env.GATEHOUSE_CONNECTOR_PUBLIC_ADDRESS);
  if (env.GATEHOUSE_TLS_CERT) cfg.tls.cert = env.GATEHOUSE_TLS_CERT;
  if (env.GATEHOUSE_TLS_KEY) cfg.tls.key = env.GATEHOUSE_TLS_KEY;
  if (env.GATEHOUSE_HTTP_TLS) cfg.httpTls.mode = parseApiTlsMode(env.GATEHOUSE_HTTP_TLS, 'GATEHOUSE_HTTP_TLS');
  if (env.GATEHOUSE_HTTP_TLS_CERT) cfg.httpTls.cert = env.GATEHOUSE_HTTP_TLS_CERT;
  if (env.GATEHOUSE_HTTP_TLS_KEY) cfg.httpTls.key = env.GATEHOUSE_HTTP_TLS_KEY;
  if (env.GATEHOUSE_HTTP_ALLOW_PLAINTEXT) cfg.httpTls.allowPlaintext = /^(1|true|yes|on)$/i.test(env.GATEHOUSE_HTTP_ALLOW_PLAINTEXT);
  if (env.GATEHOUSE_LOG_LEVEL) cfg.logLevel = env.GATEHOUSE_LOG_LEVEL;
  if (env.GATEHOUSE_ADMIN_TOKEN) cfg.adminToken = env.GATEHOUSE_ADMIN_TOKEN;
  if (env.GATEHOUSE_KEY) cfg.secretKey = env.GATEHOUSE_KEY;
  if (env.GATEHOUSE_SIGNING_KEY_FILE) cfg.signingKeyFile = env.GATEHOUSE_SIGNING_KEY_FILE;
  if (env.GATEHOUSE_RECORD_FSYNC) cfg.recording.fsync = !/^(0|false|off|no)$/i.test(env.GATEHOUSE_RECORD_FSYNC);
  if (env.GATEHOUSE_STORE) cfg.store = storeUrl(env.GATEHOUSE_STORE, 'GATEHOUSE_STORE');
  if (env.GATEHOUSE_MAX_RETAINED_EVENTS) cfg.recording.maxRetainedEvents = Math.max(1, num(env.GATEHOUSE_MAX_RETAINED_EVENTS, 'GATEHOUSE_MAX_RETAINED_EVENTS'));
  if (env.GATEHOUSE_RECORD_WRITER === 'inline' || env.GATEHOUSE_RECORD_WRITER === 'thread' || env.GATEHOUSE_RECORD_WRITER === 'overlapped' || env.GATEHOUSE_RECORD_WRITER === 'journal') cfg.recording.writer = env.GATEHOUSE_RECORD_WRITER;
  if (env.GATEHOUSE_RECORD_JOURNAL_BYTES) {
    const n = Number(env.GATEHOUSE_RECORD_JOURNAL_BYTES);
    if (!Number.isInteger(n) || n < 64 * 1024) throw new Error('GATEHOUSE_RECORD_JOURNAL_BYTES must be a whole number of bytes, at least 65536');
    cfg.recording.journalBytes = n;
  }
  if (env.GATEHOUSE_LEASE_MS) cfg.lease.durationMs = num(env.GATEHOUSE_LEASE_MS, 'GATEHOUSE_LEASE_MS');
  if (env.GATEHOUSE_HEARTBEAT_MS) cfg.lease.heartbeatMs = num(env.GATEHOUSE_HEARTBEAT_MS, 'GATEHOUSE_HEARTBEAT_MS');
  if (env.GATEHOUSE_API_HEADERS_TIMEOUT_MS) cfg.api.headersTimeoutMs = num(env.GATEHOUSE_API_HEADERS_TIMEOUT_MS, 'GATEHOUSE_API_HEADERS_TIMEOUT_MS');
  if (env.GATEHOUSE_API_REQUEST_TIMEOUT_MS) cfg.api.requestTimeoutMs = num(env.GATEHOUSE_API_REQUEST_TIMEOUT_MS, 'GATEHOUSE_API_REQUEST_TIMEOUT_MS');
  if (flags.dataDir) cfg.dataDir = flags.dataDir;
  if (flags.http) cfg.http = parseListenAddress(flags.http);
  if (flags.pg) cfg.pg = parseListenAddress(flags.pg);
  if (flags.ssh) cfg.ssh = parseListenAddress(flags.ssh);
  if (flags.connectorListen) cfg.connectorListen = parseListenAddress(flags.connectorListen);
  if (flags.tlsCert) cfg.tls.cert = flags.tlsCert;
  if (flags.tlsKey) cfg.tls.key = flags.tlsKey;
  if (flags.httpTls) cfg.httpTls.mode = parseApiTlsMode(flags.httpTls, '--http-tls');
  if (flags.httpAllowPlaintext) cfg.httpTls.allowPlaintext = true;
  if (flags.logLevel) cfg.logLevel = flags.logLevel;
  if (flags.store) cfg.store = storeUrl(flags.store, '--store');
  cfg.dataDir = path.resolve(cfg.dataDir);
  if (!cfg.gitPush.spoolDir) cfg.gitPush.spoolDir = path.join(cfg.dataDir, 'spool');
  checkLease(cfg.lease);
  if (cfg.api.headersTimeoutMs <= 0) throw new Error('config: api.headers_timeout_ms must be positive (0 would let a client hold a connection for ever before sending its request)');
  return cfg;
}

/** A lease must outlast a few missed heartbeats, or a live gateway's sessions are taken from it. */
function checkLease(lease: GatewayConfig['lease']): void {
  if (lease.heartbeatMs < 100) throw new Error('config: lease.heartbeat_ms must be at least 100');
  if (lease.durationMs < 3 * lease.heartbeatMs) {
    throw new Error(`config: lease.duration_ms (${lease.durationMs}) must be at least three heartbeats (lease.heartbeat_ms ${lease.heartbeatMs} × 3)`);
  }
}

/** An http(s) URL; anything else is refused at start (the value itself is not echoed: it may hold a token). */
function webhookUrl(value: string, source: string): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new Error(`config: ${source} is not a URL`);
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new Error(`config: ${source} must be an http or https URL`);
  return url.toString();
}
