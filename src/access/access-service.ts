// The access stage every entry point asks (listeners, API, recordings): loads an identity's groups
// and grants from the store and hands them to the pure decision in access-policy.ts.
import type { AccessAction, AccessGrant, Identity, Store } from '../store/types.ts';
import { decide, effectiveGroups, scope, type AccessSubject, type ConnectionRef, type Decision, type EffectiveGroup } from './access-policy.ts';

export class AccessService {
  private readonly store: Store;

  constructor(store: Store) {
    this.store = store;
  }

  async subjectOf(identity: Identity): Promise<AccessSubject> {
    const memberOf = (await this.store.listGroupsOf(identity.id)).map((g) => g.name);
    const groups = effectiveGroups(memberOf, identity.externalGroups);
    // A just-in-time grant past its end decides nothing (it stays listed, for the record).
    const grants = (await this.store.listAccessGrantsOf(identity.id, groups.map((g) => g.name))).filter(live);
    return { identity, groups, grants };
  }

  /** `connection` null: the whole gateway (management needs admin there). */
  async check(identity: Identity, action: AccessAction, connection: ConnectionRef | null): Promise<Decision> {
    return decide(await this.subjectOf(identity), action, connection);
  }

  async mayConnect(identity: Identity, connection: ConnectionRef): Promise<boolean> {
    return (await this.check(identity, 'connect', connection)).allowed;
  }

  async isAdministrator(identity: Identity): Promise<boolean> {
    return (await this.check(identity, 'admin', null)).allowed;
  }

  async scope(identity: Identity, action: AccessAction): Promise<ReturnType<typeof scope>> {
    return scope(await this.subjectOf(identity), action);
  }

  /** Each identity's groups and whether it administers the gateway, from one read of memberships and grants (identity lists can be long). */
  async standing(identities: Identity[]): Promise<Map<string, { admin: boolean; groups: EffectiveGroup[] }>> {
    const [members, grants] = await Promise.all([this.store.listGroupMembers(), this.store.listAccessGrants()]);
    const memberOf = new Map<string, string[]>();
    for (const m of members) memberOf.set(m.identityId, [...(memberOf.get(m.identityId) ?? []), m.groupName]);
    const adminGrants = grants.filter((g) => g.action === 'admin' && g.connectionId === null && live(g));
    return new Map(identities.map((identity) => {
      const groups = effectiveGroups(memberOf.get(identity.id) ?? [], identity.externalGroups);
      return [identity.id, { admin: decide({ identity, groups, grants: adminGrants }, 'admin', null).allowed, groups }];
    }));
  }
}

function live(g: AccessGrant): boolean {
  return g.expiresAt === null || g.expiresAt > Date.now();
}
