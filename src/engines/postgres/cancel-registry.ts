// Maps the BackendKeyData the gateway gives each client to the upstream backend serving it, so
// a CancelRequest (sent on a fresh connection, unauthenticated by design of the protocol) reaches
// the right backend — and only with the exact secret the client was given.
import { randomBytes, randomInt, timingSafeEqual } from 'node:crypto';

export interface CancelTarget {
  cancel(): void;
}

interface Entry { secret: Buffer; target: CancelTarget }

export class CancelRegistry {
  private readonly entries = new Map<number, Entry>();

  register(target: CancelTarget): { pid: number; secret: Buffer } {
    let pid: number;
    do pid = randomInt(1, 0x7fffffff); while (this.entries.has(pid));
    const secret = randomBytes(4);
    this.entries.set(pid, { secret, target });
    return { pid, secret };
  }

  unregister(pid: number): void {
    this.entries.delete(pid);
  }

  /** Returns the target only when the secret matches; a wrong secret looks like an unknown key. */
  lookup(pid: number, secret: Buffer): CancelTarget | undefined {
    const entry = this.entries.get(pid);
    if (!entry || entry.secret.length !== secret.length || !timingSafeEqual(entry.secret, secret)) return undefined;
    return entry.target;
  }
}
