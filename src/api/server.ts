// The HTTP API the CLI (and later the web console) talks to. Every route but /health requires a
// bearer token; management routes require admin, recordings audit (default deny, src/access/).
import Fastify, { type FastifyBaseLogger, type FastifyError, type FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { Engine } from '../engines/engine.ts';
import type { SecretBox } from '../crypto/secret-box.ts';
import { UserError, type IdentityService } from '../identity/identity-service.ts';
import type { Store } from '../store/types.ts';
import type { Recorder } from '../recorder/recorder.ts';
import type { PolicyService } from '../policy/policy-service.ts';
import { policyRoutes } from './routes/policy.ts';
import { auditRoutes } from './routes/audit.ts';
import { registerAuditHook } from './audit-hook.ts';
import type { AdminAudit } from '../audit/admin-audit.ts';
import type { ApprovalService } from '../approvals/approval-service.ts';
import { approvalRoutes } from './routes/approvals.ts';
import type { ConnectorCa } from '../connector/ca.ts';
import type { TunnelServer } from '../connector/tunnel-server.ts';
import type { Dialer } from '../connector/dialer.ts';
import { connectorRoutes } from './routes/connectors.ts';
import type { ListenAddress } from '../util/address.ts';
import { authenticate } from './auth.ts';
import { identityRoutes } from './routes/identities.ts';
import { connectionRoutes } from './routes/connections.ts';
import { grantRoutes } from './routes/grants.ts';
import { groupRoutes } from './routes/groups.ts';
import { accessRoutes } from './routes/access.ts';
import { sessionRoutes } from './routes/sessions.ts';
import { workloadRoutes } from './routes/workload.ts';
import type { WorkloadExchange } from '../identity/workload/exchange.ts';
import { logoutRoutes, ssoRoutes } from './routes/sso.ts';
import type { SignInService } from '../identity/sso/sign-in-service.ts';
import type { SessionRegistry } from '../access/session-registry.ts';
import type { AuthThrottle } from '../access/auth-throttle.ts';
import { closeSilentConnections } from './silent-connections.ts';
import { CONSOLE_COOKIE, consoleSessionRoutes, consoleSignInRoutes } from './console-session.ts';
import fastifySwagger from '@fastify/swagger';
import { consoleAssets } from './console-assets.ts';

export interface ApiDeps {
  store: Store;
  identity: IdentityService;
  secrets: SecretBox;
  engines: Engine[];
  log: Logger;
  recorder: Recorder;
  policy: PolicyService;
  /** Every state-changing request is recorded here first (src/audit/). */
  audit: AdminAudit;
  /** Actions held by a policy rule, waiting for people to decide. */
  approvals: ApprovalService;
  dialer: Dialer;
  /** apiFingerprint: SHA-256 of the API's TLS certificate (absent: plain HTTP), for enrollment commands. */
  connectors: { ca: ConnectorCa; tunnels: TunnelServer; publicAddress: ListenAddress; apiFingerprint?: string };
  /** OIDC token exchange for CI jobs and agent runs (absent: not offered). */
  workload?: WorkloadExchange;
  /** People signing in through identity providers (absent: not offered). */
  sso?: SignInService;
  /** The open sessions: routes that change access tell it, so that revocation ends them. */
  sessions: SessionRegistry;
  /** Failed sign-ins per address, shared with the protocol listeners (absent: bearer tokens are not limited). */
  authThrottle?: AuthThrottle;
  /** Announces written recording batches, for live views (absent: they look every few seconds). */
  written?: import('../store/write-feed.ts').WriteFeed;
  /** Timeouts and the body limit (defaults: API_LIMITS). */
  limits?: Partial<ApiLimits>;
}

/**
 * What one HTTP client may cost before it has authenticated. Node's defaults under fastify leave
 * the request timeout at 0, so a client that sends its headers a byte at a time (slowloris)
 * holds a socket for ever. There is no idle (socket inactivity) timeout on purpose: a Git push
 * held for approval waits silently for its answer.
 */
export interface ApiLimits {
  /** The request line and headers must arrive within this. */
  headersTimeoutMs: number;
  /** The whole request, body included, must arrive within this (a Git push's pack too). */
  requestTimeoutMs: number;
  /** An idle keep-alive connection is closed after this. */
  keepAliveTimeoutMs: number;
  /** Largest JSON/form body (Git HTTP routes set their own). */
  bodyLimitBytes: number;
}

export const API_LIMITS: ApiLimits = { headersTimeoutMs: 10_000, requestTimeoutMs: 300_000, keepAliveTimeoutMs: 5_000, bodyLimitBytes: 1024 * 1024 };

/** How often Node checks the header and request timeouts (its default, 30 s, lets a slowloris socket live 30 s past them). */
const TIMEOUT_CHECK_INTERVAL_MS = 1000;

export interface ApiServer { address: ListenAddress; app: FastifyInstance; close(): Promise<void> }

/** https: serve the API over TLS with this certificate (src/tls/api-tls.ts decides when). */
export interface ApiTransport { https?: { cert: string; key: string } }

export function buildApi(deps: ApiDeps, transport: ApiTransport = {}): FastifyInstance {
  // Per-request lines are info level; the API logger starts at warn so they stay out of the logs.
  const apiLog = deps.log.child({ component: 'api' }, { level: deps.log.levelVal > 40 ? deps.log.level : 'warn' });
  const limits = { ...API_LIMITS, ...deps.limits };
  // Node refuses a headers timeout longer than the request timeout; https takes the same server options.
  const serverTimeouts = { headersTimeout: Math.min(limits.headersTimeoutMs, limits.requestTimeoutMs || Infinity), connectionsCheckingInterval: TIMEOUT_CHECK_INTERVAL_MS };
  const app = Fastify({
    loggerInstance: apiLog as FastifyBaseLogger, bodyLimit: limits.bodyLimitBytes,
    requestTimeout: limits.requestTimeoutMs, keepAliveTimeout: limits.keepAliveTimeoutMs,
    ...(transport.https ? { https: { ...transport.https, ...serverTimeouts } } : { http: serverTimeouts }),
  }) as FastifyInstance;
  closeSilentConnections(app.server as import('node:http').Server, limits.headersTimeoutMs);
  app.setErrorHandler((err: FastifyError, _req, reply) => {
    if (err instanceof UserError) return reply.code(err.status).send({ error: err.message });
    if (err.validation) return reply.code(400).send({ error: describeValidation(err.validation) });
    if (err.statusCode && err.statusCode < 500) return reply.code(err.statusCode).send({ error: err.message });
    deps.log.error({ err: err.message }, 'api error');
    return reply.code(500).send({ error: 'internal error' });
  });
  // Before any route: every change through the API is in the admin audit log before it is made.
  registerAuditHook(app, deps.audit);
  // The API described as OpenAPI 3, from the routes' own schemas (the console uses nothing else).
  app.register(fastifySwagger, {
    openapi: {
      info: { title: 'Gatehouse API', version: '1', description: 'Every route but health, sign-in, enrollment and token exchange needs a bearer token or the console session cookie (whose changes also need the x-gatehouse-csrf header).' },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' }, console: { type: 'apiKey', in: 'cookie', name: CONSOLE_COOKIE } } },
      security: [{ bearer: [] }, { console: [] }],
    },
    transform: ({ schema, url }) => ({ schema: url.startsWith('/api/v1/') ? schema : { ...(schema ?? {}), hide: true }, url }),
  });
  app.get('/api/openapi.json', { schema: { hide: true } }, async () => app.swagger());
  // Unauthenticated, so it tells whether recording works and how much was lost, never why.
  app.get('/api/v1/health', async () => {
    const r = deps.recorder.stats;
    return { status: r.failing ? 'degraded' : 'ok', recording: { writing: !r.failing, failedWrites: r.failedWrites, droppedEvents: r.droppedEvents, gapMarkers: r.gapMarkers } };
  });
  // Protocol engines served over HTTP authenticate their own way (Git: basic auth with a token).
  for (const engine of deps.engines) if (engine.routes) app.register(engine.routes);
  // Enrollment authenticates with its own single-use token, so it sits outside the bearer scope.
  app.register(connectorRoutes, deps);
  // The token exchange authenticates with the caller's OIDC token: no bearer token yet.
  app.register(workloadRoutes, deps);
  // Sign-in: the CLI holds no token yet, the browser never has one.
  app.register(ssoRoutes, deps);
  app.register(consoleSignInRoutes, deps);
  app.register(async (scope) => {
    scope.addHook('onRequest', authenticate(deps.identity, deps.authThrottle));
    scope.get('/api/v1/whoami', async (req) => ({ name: req.identity!.name, kind: req.identity!.kind, admin: await deps.identity.access.isAdministrator(req.identity!) }));
    await scope.register(identityRoutes, deps);
    await scope.register(connectionRoutes, deps);
    await scope.register(grantRoutes, deps);
    await scope.register(groupRoutes, deps);
    await scope.register(accessRoutes, deps);
    await scope.register(sessionRoutes, deps);
    await scope.register(policyRoutes, deps);
    await scope.register(auditRoutes, deps);
    await scope.register(approvalRoutes, deps);
    await scope.register(logoutRoutes, deps);
    await scope.register(consoleSessionRoutes, deps);
  });
  // The web console (console/): its built files, served from the API's own address.
  app.register(consoleAssets);
  return app;
}

/** Turns schema validation failures into messages a person can act on. */
function describeValidation(errors: NonNullable<FastifyError['validation']>): string {
  return errors.map((e) => {
    const field = (e.instancePath || '').replace(/^\//, '').replaceAll('/', '.') || String((e.params as { missingProperty?: string }).missingProperty ?? 'request');
    const params = e.params as { allowedValues?: unknown[]; limit?: number; pattern?: string };
    if (params.allowedValues) return `${field} must be one of: ${params.allowedValues.join(', ')}`;
    if (e.keyword === 'pattern') return `${field} has characters that are not allowed`;
    return `${field} ${e.message ?? 'is invalid'}`;
  }).join('; ');
}

export async function startApiServer(deps: ApiDeps, address: ListenAddress, transport: ApiTransport = {}): Promise<ApiServer> {
  const app = buildApi(deps, transport);
  await app.listen({ host: address.host, port: address.port });
  const bound = app.server.address();
  const port = typeof bound === 'object' && bound ? bound.port : address.port;
  deps.log.info({ address: `${address.host}:${port}`, tls: Boolean(transport.https), fingerprint: deps.connectors.apiFingerprint }, 'api listening');
  return { address: { host: address.host, port }, app, close: () => app.close() };
}
