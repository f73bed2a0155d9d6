// The token exchange: a CI job's or agent run's OIDC token in, a short-lived gatehouse token out.
// Every exchange creates an identity of its own (kind agent) that keeps the token's verified
// claims, so that each run is told apart in the recordings, and gets the grants its policy names.
import type { Logger } from 'pino';
import type { Identity, IdentityClaims, Store } from '../../store/types.ts';
import { CLAIM_NAME } from '../../store/types.ts';
import { UserError, type IdentityService } from '../identity-service.ts';
import type { WorkloadIdentityConfig } from './config.ts';
import { JwksCache } from './jwks-cache.ts';
import { verifyOidcToken, type KeySource } from './verify-oidc-token.ts';
import { choosePolicy, claimText } from './trust-policy.ts';
import { randomSuffix, runIdentityName } from './identity-name.ts';
import { WorkloadRefusal } from './errors.ts';
import { runIdentitySource } from './run-identity.ts';
import { ReplayGuard } from './replay-guard.ts';
import { subjectLabel } from '../../access/access-policy.ts';
import { newId } from '../../util/ids.ts';

export interface ExchangeResult { token: string; identity: Identity; expiresAt: number; policy: string; granted: string[] }

export interface WorkloadExchangeDeps {
  store: Store;
  identity: IdentityService;
  config: WorkloadIdentityConfig;
  log: Logger;
  now?: () => number;
  /** Where issuers' keys come from (default: a JWKS cache over HTTP). */
  keys?: KeySource;
}

/** Timing claims say nothing about who ran; everything else of the token is kept. */
const NOT_RECORDED = new Set(['exp', 'iat', 'nbf']);
const MAX_CLAIMS = 100;
const MAX_CLAIM_LENGTH = 2048;

/** The claims a run identity keeps: scalar claims as text, `aud` as the audience that was accepted. */
export function recordedClaims(payload: Record<string, unknown>, audience: string): IdentityClaims {
  const out: IdentityClaims = {};
  for (const [name, value] of Object.entries(payload)) {
    if (Object.keys(out).length >= MAX_CLAIMS) break;
    if (NOT_RECORDED.has(name) || !CLAIM_NAME.test(name)) continue;
    const text = name === 'aud' ? audience : claimText(value);
    if (text !== undefined && text.length <= MAX_CLAIM_LENGTH) out[name] = text;
  }
  return out;
}

export class WorkloadExchange {
  private readonly deps: WorkloadExchangeDeps;
  private readonly keys: KeySource;
  private readonly issuers: ReadonlySet<string>;
  private readonly now: () => number;
  private readonly replay: ReplayGuard;

  constructor(deps: WorkloadExchangeDeps) {
    this.deps = deps;
    this.now = deps.now ?? Date.now;
    const { config, log } = deps;
    this.replay = new ReplayGuard(deps.store, { now: this.now, onPruneError: (err) => log.warn({ err: err.message }, 'could not remove expired exchanged-token entries') });
    this.issuers = new Set(config.policies.map((p) => p.issuer));
    this.keys = deps.keys ?? new JwksCache(new Map(config.policies.map((p) => [p.issuer, p.jwksUrl])), {
      timeoutMs: config.jwksTimeoutMs, refetchIntervalMs: config.jwksRefetchIntervalSeconds * 1000, maxAgeMs: config.jwksMaxAgeSeconds * 1000, now: this.now,
      onFetch: (e) => (e.error ? log.warn(e, 'could not fetch an issuer\'s signing keys') : log.info(e, 'fetched an issuer\'s signing keys')),
    });
  }

  get enabled(): boolean {
    return this.deps.config.policies.length > 0;
  }

  /**
   * Refuses (throws) a configuration whose trust policies give run identities a group that holds
   * admin: a run identity is never an administrator. The access stage ignores such grants at every
   * decision anyway (grants change after start); this makes the mistake loud at start.
   */
  async checkPolicies(): Promise<void> {
    const { config, store } = this.deps;
    if (!config.policies.length) return;
    const admin = (await store.listAccessGrants()).filter((g) => g.action === 'admin' && g.subjectType === 'group');
    const problems = config.policies.flatMap((policy) => admin.filter((g) => policy.groups.includes(g.subjectName)).map((grant) => ({ policy, grant })));
    if (!problems.length) return;
    const what = problems.map(({ policy, grant }) => `trust policy "${policy.name}" gives its run identities group ${grant.subjectName}, which holds admin on ${grant.connectionName ?? '*'} (grant ${grant.id})`);
    const first = problems[0].grant;
    throw new Error(`workload_identity: ${what.join('; ')}. A run identity is never an administrator: take the group out of the policy's groups, `
      + `or revoke the grant (gatehouse revoke ${subjectLabel(first)} '${first.connectionName ?? '*'}' --action admin)`);
  }

  /** The trust policies that give their run identities `group` (an admin grant to it would be refused). */
  policiesNaming(group: string): string[] {
    return this.deps.config.policies.filter((p) => p.groups.includes(group)).map((p) => p.name);
  }

  /** Throws WorkloadRefusal (refused: say why) or WorkloadUnavailable (could not check: retry later). */
  async exchange(oidcToken: string): Promise<ExchangeResult> {
    const { config, store, log } = this.deps;
    const verified = await verifyOidcToken(oidcToken, { issuers: this.issuers, keys: this.keys, clockSkewSeconds: config.clockSkewSeconds, now: this.now });
    const decision = choosePolicy(config.policies, verified);
    if (!decision.ok) {
      if (config.explainRefusals) throw new WorkloadRefusal(decision.reason);
      log.info({ issuer: verified.issuer, sub: verified.payload.sub, reason: decision.reason }, 'OIDC token matched no trust policy');
      throw new WorkloadRefusal('no trust policy matches');
    }
    const policy = decision.policy;
    // The gatehouse token never outlives the token it was exchanged for.
    const ttlSeconds = Math.min(policy.maxTtlSeconds, Math.floor((verified.expiresAt - this.now()) / 1000));
    if (ttlSeconds < 1) throw new WorkloadRefusal(`token expired at ${new Date(verified.expiresAt).toISOString()}`);
    // Once per token, on every gateway of the store: a replay is refused before anything is made.
    // Kept past exp by the clock skew, as long as any gateway would still accept the token.
    await this.replay.claim({ issuer: verified.issuer, jti: verified.payload.jti, token: oidcToken, keepUntil: verified.expiresAt + config.clockSkewSeconds * 1000 });

    const claims = recordedClaims(verified.payload, policy.audience);
    const identity = await this.createRunIdentity(policy.identityName, policy.name, claims, policy.groups);
    try {
      const granted: string[] = [];
      for (const name of policy.grants) {
        const conn = await store.getConnectionByName(name);
        if (!conn) {
          log.warn({ policy: policy.name, connection: name }, 'trust policy grants a connection that does not exist');
          continue;
        }
        await store.addAccessGrant({ id: newId('grant'), subjectType: 'identity', subjectId: identity.id, action: 'connect', connectionId: conn.id, createdAt: this.now() });
        granted.push(name);
      }
      const issued = await this.deps.identity.issueToken(identity, ttlSeconds);
      log.info({ identity: identity.name, policy: policy.name, issuer: verified.issuer, sub: verified.payload.sub, ttlSeconds, granted }, 'OIDC token exchanged');
      return { token: issued.token, identity, expiresAt: issued.record.expiresAt, policy: policy.name, granted };
    } catch (err) {
      await store.deleteIdentity(identity.id).catch(() => {}); // no half-made run identities
      throw err;
    }
  }

  private async createRunIdentity(template: string | undefined, policy: string, claims: IdentityClaims, groups: string[]): Promise<Identity> {
    for (let attempt = 0; ; attempt++) {
      const name = runIdentityName(template, policy, claims, randomSuffix());
      try {
        return await this.deps.identity.createIdentity(name, 'agent', false, { claims, authSource: runIdentitySource(policy), externalGroups: groups });
      } catch (err) {
        // A random suffix that is taken already: draw another.
        if (!(err instanceof UserError && err.status === 409) || attempt >= 4) throw err;
      }
    }
  }
}
