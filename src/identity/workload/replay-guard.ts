// Each OIDC ID token is exchanged once. Whoever gets hold of a job's ID token (a log line, a
// compromised step) could otherwise trade it for gatehouse tokens until it expires. The store
// keeps a key per exchanged token until the token expires — the SHA-256 of issuer and jti, or of
// the whole token when it has no jti, never the token itself — so the refusal holds on every
// gateway sharing the store and across restarts, and of two concurrent exchanges exactly one wins.
import { createHash } from 'node:crypto';
import type { Store } from '../../store/types.ts';
import { WorkloadRefusal } from './errors.ts';

/** Expired entries are removed at most this often per gateway (one indexed DELETE). */
const PRUNE_INTERVAL_MS = 60_000;

export function exchangedTokenKey(issuer: string, jti: unknown, token: string): string {
  const sha = (text: string): string => createHash('sha256').update(text).digest('hex');
  // A jti is the issuer's to choose: issuer and jti, length-prefixed, so two issuers' jtis never collide.
  if (typeof jti === 'string' && jti !== '') return `jti:${sha(`${issuer.length}:${issuer}${jti}`)}`;
  return `token:${sha(token)}`;
}

export class ReplayGuard {
  private readonly store: Store;
  private readonly now: () => number;
  private readonly onPruneError: (err: Error) => void;
  private lastPrune = 0;

  constructor(store: Store, o: { now: () => number; onPruneError: (err: Error) => void }) {
    this.store = store;
    this.now = o.now;
    this.onPruneError = o.onPruneError;
  }

  /**
   * Puts the token on record until `keepUntil` (ms: its exp plus the clock skew a gateway allows,
   * so no gateway still accepts it once it is forgotten); throws WorkloadRefusal when it is on
   * record already.
   */
  async claim(o: { issuer: string; jti: unknown; token: string; keepUntil: number }): Promise<void> {
    const now = this.now();
    await this.prune(now);
    const first = await this.store.recordExchangedToken(exchangedTokenKey(o.issuer, o.jti, o.token), o.keepUntil, now);
    if (!first) {
      throw new WorkloadRefusal(`this token was exchanged before (${typeof o.jti === 'string' && o.jti !== '' ? 'same jti' : 'same token'}): `
        + 'an ID token is exchanged once; request a new one from the CI platform');
    }
  }

  private async prune(now: number): Promise<void> {
    if (now - this.lastPrune < PRUNE_INTERVAL_MS) return;
    this.lastPrune = now;
    // Pruning is housekeeping: a failure must not refuse the exchange (the insert decides).
    await this.store.deleteExchangedTokens(now).catch((err: Error) => this.onPruneError(err));
  }
}
