// The admin audit log: every change of state (identities, tokens, grants, groups, connections,
// connectors, policies, holds, terminations…) as an entry in a tamper-evident stream — one hash
// chain per gateway, each entry signed, its newest position anchored in a signed file in the data
// directory (src/integrity/audit-chain.ts) — checked by `gatehouse verify --store`. A change is
// recorded before it is made; if it cannot be, the change is refused. Nothing secret goes in:
// credentials in request bodies are replaced before recording.
import { createHash } from 'node:crypto';
import type { Logger } from 'pino';
import type { SigningKey } from '../integrity/signing-keys.ts';
import { chainAuditEntry, writeAuditHead } from '../integrity/audit-chain.ts';
import type { AuditEntryRow, Store } from '../store/types.ts';
import { nowUs } from '../util/ids.ts';

export class AdminAudit {
  private readonly store: Store;
  private readonly key: SigningKey;
  private readonly gatewayId: string;
  private readonly headFile: string | null;
  private readonly log: Logger;
  private last: AuditEntryRow | null = null;
  /** Entries are written one at a time, in order: each links to the one before. */
  private queue: Promise<unknown> = Promise.resolve();

  constructor(o: { store: Store; key: SigningKey; gatewayId: string; headFile: string | null; log: Logger }) {
    this.store = o.store;
    this.key = o.key;
    this.gatewayId = o.gatewayId;
    this.headFile = o.headFile;
    this.log = o.log;
  }

  /** Continues this gateway's chain where the store has it. */
  async start(): Promise<void> {
    this.last = (await this.store.lastAuditEntry(this.gatewayId)) ?? null;
  }

  /** Records `action` durably; throws when it cannot be recorded (the caller refuses the change). Returns its position. */
  record(action: string, data: Record<string, unknown>): Promise<number> {
    const next = this.queue.then(async () => {
      const entry = chainAuditEntry(this.key, this.gatewayId, this.last, nowUs(), action, JSON.stringify(data));
      try {
        await this.store.appendAuditEntry(entry);
      } catch (err) {
        // Another writer took the position (a second gateway with this id), or the store failed: reread before the next entry.
        this.last = (await this.store.lastAuditEntry(this.gatewayId).catch(() => undefined)) ?? this.last;
        throw err;
      }
      this.last = entry;
      if (this.headFile) {
        try {
          writeAuditHead(this.headFile, this.key, this.gatewayId, entry.seq, entry.hash);
        } catch (err) {
          this.log.error({ err: (err as Error).message }, 'could not write the admin audit log head');
        }
      }
      return entry.seq;
    });
    this.queue = next.catch(() => undefined);
    return next;
  }

  /** Records an outcome nobody waits for (the result of a change recorded before); a failure is logged. */
  note(action: string, data: Record<string, unknown>): void {
    this.record(action, data).catch((err: unknown) => this.log.error({ err: (err as Error).message, action }, 'could not record an admin audit outcome'));
  }
}

/** Request fields whose values are credentials: replaced before anything is recorded. */
const SECRET_FIELD = /pass(word|phrase)?|secret|token|private|credential|csr|^code$|^key$/i;
const MAX_RECORDED_STRING = 4096;

/** A copy of a request body fit for the audit log: credentials replaced, long texts cut to a prefix with their length and hash. */
export function auditableBody(value: unknown, depth = 0): unknown {
  if (depth > 8) return '[nested too deep]';
  if (typeof value === 'string') {
    if (value.length <= MAX_RECORDED_STRING) return value;
    return { prefix: value.slice(0, MAX_RECORDED_STRING), length: value.length, sha256: createHash('sha256').update(value).digest('hex') };
  }
  if (Array.isArray(value)) return value.slice(0, 256).map((v) => auditableBody(v, depth + 1));
  if (value === null || typeof value !== 'object') return value;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
    out[k] = SECRET_FIELD.test(k) && v !== undefined && v !== null && v !== '' ? '[redacted]' : auditableBody(v, depth + 1);
  }
  return out;
}
