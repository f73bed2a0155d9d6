// Which gatehouse identity a person who signed in is: the one linked to their issuer and subject,
// or — on their first sign-in — a new human identity named after their username. An existing
// identity of that name is never taken over: usernames can be reassigned at the provider.
import type { Identity, Store } from '../../store/types.ts';
import { UserError, type IdentityService } from '../identity-service.ts';
import { SignInRefusal } from './errors.ts';
import type { VerifiedPerson } from './verified-person.ts';

/** "alice@example.com" stays; characters an identity name may not hold become "-". */
export function identityNameFor(username: string): string {
  return username.replace(/[^A-Za-z0-9._@-]+/g, '-').replace(/^[^A-Za-z0-9]+/, '').slice(0, 63).replace(/[-._@]+$/, '');
}

export async function identityForPerson(store: Store, identities: IdentityService, person: VerifiedPerson, now: number): Promise<Identity> {
  const known = await store.getIdentityByExternalKey(person.externalKey);
  if (known) {
    // The provider is the source of truth for claims and groups: each sign-in refreshes them.
    await store.updateIdentityAttributes(known.id, person.claims, person.groups);
    return { ...known, claims: person.claims, externalGroups: person.groups };
  }
  const name = identityNameFor(person.username);
  if (name === '') throw new SignInRefusal(`the username "${person.username}" makes no identity name (letters, digits, . _ @ -)`);
  const taken = () => new SignInRefusal(`identity name "${name}" belongs to another identity (not this person at this identity provider); an administrator must rename or remove it`);
  if (await store.getIdentityByName(name)) throw taken();
  let identity: Identity;
  try {
    identity = await identities.createIdentity(name, 'human', false, { claims: person.claims, authSource: person.authSource, externalGroups: person.groups });
  } catch (err) {
    if (!(err instanceof UserError && err.status === 409)) throw err;
    // Taken meanwhile: by this person's other first sign-in (fine), or by someone else.
    const other = await store.getIdentityByExternalKey(person.externalKey);
    if (other) return other;
    throw taken();
  }
  try {
    await store.linkExternalIdentity(person.externalKey, identity.id, now);
  } catch (err) {
    // The same person's first sign-in twice at once: the other one linked first.
    await store.deleteIdentity(identity.id).catch(() => {});
    const other = await store.getIdentityByExternalKey(person.externalKey);
    if (other) return other;
    throw err;
  }
  return identity;
}
