// What marks an identity as a run identity (made by the OIDC token exchange for one CI job or
// agent run). The access stage asks, because a run identity never administers the gateway.
import type { Identity } from '../../store/types.ts';

const SOURCE_PREFIX = 'oidc-exchange:';

/** The authSource a run identity made under `policy` carries. */
export function runIdentitySource(policy: string): string {
  return `${SOURCE_PREFIX}${policy}`;
}

export function isRunIdentity(identity: Pick<Identity, 'authSource'>): boolean {
  return identity.authSource?.startsWith(SOURCE_PREFIX) ?? false;
}
