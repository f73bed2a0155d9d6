// Composition root: builds the shared stages (store, identity, recorder, secrets, dialer),
// hands them to each protocol engine, and serves the HTTP API.
import path from 'node:path';
import { mkdirSync } from 'node:fs';
import type { Logger } from 'pino';
import type { GatewayConfig } from '../config/config.ts';
import { SqliteStore } from '../store/sqlite/sqlite-store.ts';
import { PostgresStore } from '../store/postgres/postgres-store.ts';
import type { Store } from '../store/types.ts';
import { IdentityService } from '../identity/identity-service.ts';
import { WorkloadExchange } from '../identity/workload/exchange.ts';
import { SignInService } from '../identity/sso/sign-in-service.ts';
import { Recorder } from '../recorder/recorder.ts';
import { WriteFeed, withWriteFeed } from '../store/write-feed.ts';
import { PolicyService } from '../policy/policy-service.ts';
import { AdminAudit } from '../audit/admin-audit.ts';
import { ApprovalService } from '../approvals/approval-service.ts';
import { ApprovalWebhook } from '../approvals/webhook.ts';
import { loadPolicyParser } from '../policy/sql-facts.ts';
import { SecretBox, loadSecretKey } from '../crypto/secret-box.ts';
import { loadOrCreateTls } from '../tls/certificate.ts';
import { decideApiTls } from '../tls/api-tls.ts';
import os from 'node:os';
import { RoutingDialer } from '../connector/dialer.ts';
import { loadOrCreateCa, loadOrIssueTunnelCert } from '../connector/ca.ts';
import { TunnelServer } from '../connector/tunnel-server.ts';
import type { Engine, EngineContext } from '../engines/engine.ts';
import { PostgresEngine } from '../engines/postgres/engine.ts';
import { SshEngine } from '../engines/ssh/engine.ts';
import { GitHttpEngine } from '../engines/git-http/engine.ts';
import { startApiServer, type ApiServer } from '../api/server.ts';
import type { ListenAddress } from '../util/address.ts';
import { bootstrapAdmin, loadGatewayId } from './bootstrap.ts';
import { scheduleRetention } from '../recorder/retention.ts';
import { scheduleSearchIndexing } from '../store/search-indexer.ts';
import { loadSigningKey } from '../integrity/signing-keys.ts';
import { SessionRegistry } from '../access/session-registry.ts';
import { Admission } from '../access/admission.ts';
import { AuthThrottle } from '../access/auth-throttle.ts';
import { clearSpoolDir } from '../engines/git/push-spool.ts';

export interface RunningGateway {
  http: ListenAddress;
  /** https when the API serves TLS (src/tls/api-tls.ts). */
  httpScheme: 'http' | 'https';
  /** SHA256:… of the API's certificate, for clients and connectors to pin (https only). */
  apiFingerprint?: string;
  pg: ListenAddress;
  ssh: ListenAddress;
  connectors: ListenAddress;
  /** Set only on the first start without a preset token: print it once, it is not stored. */
  newAdminToken?: string;
  store: Store;
  tlsCertificate: string;
  close(): Promise<void>;
}

export async function startGateway(config: GatewayConfig, log: Logger): Promise<RunningGateway> {
  mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
  // The store holds identities, connections and recordings; keys, TLS and the seal-log head stay in the data directory.
  const store: Store = config.store
    ? await PostgresStore.open(config.store, { onIdleError: (err) => log.warn({ err: err.message }, 'store connection lost') })
    : new SqliteStore(path.join(config.dataDir, 'gatehouse.db'), { recordWriter: config.recording.writer, journalBytes: config.recording.journalBytes, fsync: config.recording.fsync });
  const closers: Array<() => Promise<void>> = [() => store.close()];
  try {
    const secrets = new SecretBox(loadSecretKey(path.join(config.dataDir, 'secret.key'), config.secretKey));
    const tls = await loadOrCreateTls(path.join(config.dataDir, 'tls'), config.tls);
    // Decided before anything listens: plain HTTP off loopback is refused at start unless allowed.
    const apiTls = decideApiTls(config.http, config.httpTls, tls);
    if (apiTls.warning) log.warn(apiTls.warning);
    const identity = new IdentityService(store);
    const newAdminToken = await bootstrapAdmin(store, identity, config.adminToken);
    const signingKey = loadSigningKey(path.join(config.dataDir, 'signing'), config.signingKeyFile);
    // Live views hear when a session's recording grew (src/store/write-feed.ts).
    const written = new WriteFeed();
    const recorder = new Recorder(withWriteFeed(store, written), log, signingKey, {
      sampleRows: config.recording.sampleRows, sampleBytes: config.recording.sampleBytes,
      checkpointIntervalMs: config.recording.checkpointIntervalMs,
      sealLogHeadFile: path.join(config.dataDir, 'seal-log.head'),
      gatewayId: loadGatewayId(config.dataDir),
      leaseMs: config.lease.durationMs, heartbeatMs: config.lease.heartbeatMs, maxRetainedEvents: config.recording.maxRetainedEvents,
    });
    await recorder.init();
    closers.unshift(() => recorder.close());
    // The policy in force decides before actions reach targets; its SQL parser loads once, here.
    await loadPolicyParser();
    const policy = new PolicyService(store, log.child({ component: 'policy' }));
    await policy.start();
    closers.unshift(async () => policy.stop());
    // Every change through the API goes to the admin audit log first (src/audit/).
    const audit = new AdminAudit({ store, key: signingKey, gatewayId: recorder.options.gatewayId, headFile: path.join(config.dataDir, 'audit-log.head'), log: log.child({ component: 'audit' }) });
    await audit.start();
    const approvals = new ApprovalService({
      store, access: identity.access, gatewayId: recorder.options.gatewayId, log: log.child({ component: 'approvals' }),
      webhook: config.approvals.webhookUrl ? new ApprovalWebhook(config.approvals.webhookUrl, log.child({ component: 'approvals-webhook' })) : null,
    });
    closers.unshift(async () => approvals.close());
    const stopRetention = scheduleRetention(store, recorder, log, 3600_000);
    // Ended sessions go into the full-text index behind the recording.
    const stopIndexing = scheduleSearchIndexing(store, log);
    closers.unshift(async () => stopIndexing());
    closers.unshift(async () => stopRetention());

    // Connectors: the gateway's CA, the tunnel listener, and a dialer that routes through them.
    const tlsDir = path.join(config.dataDir, 'tls');
    const ca = await loadOrCreateCa(tlsDir);
    const tunnels = new TunnelServer({ store, log, ca, tls: await loadOrIssueTunnelCert(ca, tlsDir, ['localhost', os.hostname()], ['127.0.0.1', '::1']) });
    const tunnelAddress = await tunnels.listen(config.connectorListen);
    closers.unshift(() => tunnels.close());
    // Open sessions are re-authorised when access changes, and ended when their token expires.
    const sessions = new SessionRegistry({ store, access: identity.access, log });
    sessions.start();
    closers.unshift(async () => sessions.close());
    // A session another gateway took over (this one's lease had lapsed) ends here: its recording did already.
    recorder.onTakenOver = (sessionId, reason) => { void sessions.kill(sessionId, reason); };
    const admission = new Admission({ store, identity, recorder, log, throttle: new AuthThrottle(config.authLimit) }, sessions);
    closers.unshift(() => admission.close());
    const ctx: EngineContext = { store, identity, recorder, admission, secrets, policy, approvals, dialer: new RoutingDialer(tunnels), tls, log };
    const pgEngine = new PostgresEngine(ctx, {
      maxClientMessageBytes: config.postgres.maxMessageBytes, authTimeoutMs: config.postgres.authTimeoutMs,
      allowLoopbackCleartext: config.postgres.allowLoopbackCleartext, recordedTextBytes: config.postgres.recordedTextBytes,
    });
    // Pushes held by a previous run (a crash while deciding) were never forwarded: drop them.
    const staleSpools = clearSpoolDir(config.gitPush.spoolDir);
    if (staleSpools > 0) log.info({ files: staleSpools, dir: config.gitPush.spoolDir }, 'removed push spool files left by a previous run');
    const sshEngine = new SshEngine(ctx, { hostKeyDir: path.join(config.dataDir, 'ssh'), gitPush: config.gitPush });
    const engines: Engine[] = [pgEngine, sshEngine, new GitHttpEngine(ctx, config.gitPush)];
    const pg = await pgEngine.listen(config.pg);
    closers.unshift(() => pgEngine.close());
    const ssh = await sshEngine.listen(config.ssh);
    closers.unshift(() => sshEngine.close());

    const connectors = { ca, tunnels, publicAddress: config.connectorPublicAddress ?? tunnelAddress, apiFingerprint: apiTls.fingerprint };
    const workload = new WorkloadExchange({ store, identity, config: config.workloadIdentity, log: log.child({ component: 'workload-identity' }) });
    await workload.checkPolicies();
    // Redirect and ACS URLs need the gateway's public URL: configured, else the listener's address once bound.
    let apiAddress = config.http;
    const sso = new SignInService({
      store, identity, recorder, config: config.sso, log: log.child({ component: 'sso' }),
      publicUrl: () => config.sso.publicUrl ?? `${apiTls.scheme}://${apiAddress.host.includes(':') ? `[${apiAddress.host}]` : apiAddress.host}:${apiAddress.port}`,
    });
    const api: ApiServer = await startApiServer({ store, identity, secrets, engines, log, recorder, policy, audit, approvals, dialer: ctx.dialer, connectors, workload, sso, sessions, written, limits: config.api, authThrottle: admission.throttle }, config.http, { https: apiTls.https });
    apiAddress = api.address;
    if (sso.enabled && !config.sso.publicUrl && /^(0\.0\.0\.0|::)$/.test(apiAddress.host)) {
      log.warn('sso.public_url is not set and the API listens on every address: identity providers will be told an unusable URL; set sso.public_url');
    }
    closers.unshift(() => api.close());

    let closing: Promise<void> | null = null;
    return {
      http: api.address, httpScheme: apiTls.scheme, apiFingerprint: apiTls.fingerprint, pg, ssh, connectors: tunnelAddress, newAdminToken, store, tlsCertificate: tls.cert,
      close: () => {
        closing ??= (async () => { for (const c of closers) await c(); })();
        return closing;
      },
    };
  } catch (err) {
    for (const c of closers) await c().catch(() => {});
    throw err;
  }
}
