import type { DatabaseSync, StatementSync } from 'node:sqlite';
import { SessionsTakenOverError, sessionIdsOf, type RecordBatch, type SessionOwner } from '../types.ts';
import { sessionClaimsColumn } from '../row-mapping.ts';

/** Writes one group-commit batch in a single transaction (one fsync). */
export class RecordBatchWriter {
  private readonly db: DatabaseSync;
  private readonly insSession: StatementSync;
  private readonly insEvent: StatementSync;
  private readonly endSession: StatementSync;
  private readonly insCheckpoint: StatementSync;
  private readonly insSeal: StatementSync;
  private readonly storedEvent: StatementSync;
  private readonly storedSeal: StatementSync;
  private readonly storedSession: StatementSync;
  private readonly ownerOf: StatementSync;

  constructor(db: DatabaseSync) {
    this.db = db;
    // OR IGNORE + a check of what was there: a batch retried after an ambiguous failure (the
    // writer thread died after COMMIT) finds its own rows, and anything else fails loudly.
    this.insSession = db.prepare(`INSERT OR IGNORE INTO sessions (id, protocol, identity_id, identity_name, identity_kind, client_addr,
      application_name, connection_id, connection_name, target_host, target_port, target_database, target_user, started_at, recording,
      identity_claims, auth_method, gateway_id)
      VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`);
    this.ownerOf = db.prepare('SELECT gateway_id FROM sessions WHERE id = ?');
    this.insEvent = db.prepare('INSERT OR IGNORE INTO events (session_id, seq, ts, type, data, hash) VALUES (?, ?, ?, ?, ?, ?)');
    this.storedEvent = db.prepare('SELECT ts, type, data, hash FROM events WHERE session_id = ? AND seq = ?');
    this.storedSeal = db.prepare('SELECT session_id, hash FROM seals WHERE gateway_id = ? AND position = ?');
    this.storedSession = db.prepare('SELECT started_at, identity_id, connection_id FROM sessions WHERE id = ?');
    this.insCheckpoint = db.prepare('INSERT OR REPLACE INTO checkpoints (session_id, seq, payload, key_id, signature) VALUES (?, ?, ?, ?, ?)');
    this.insSeal = db.prepare('INSERT OR IGNORE INTO seals (gateway_id, position, session_id, payload, hash, key_id, signature) VALUES (?, ?, ?, ?, ?, ?, ?)');
    this.endSession = db.prepare('UPDATE sessions SET ended_at = ?, end_reason = ?, event_count = ? WHERE id = ?');
  }

  write(batch: RecordBatch): void {
    this.writeMany([batch]);
  }

  /** Writes batches in order, in one transaction: all of them or none. */
  writeMany(batches: readonly RecordBatch[]): void {
    this.db.exec('BEGIN IMMEDIATE');
    try {
      for (const batch of batches) this.writeRows(batch);
      this.db.exec('COMMIT');
    } catch (err) {
      if (this.db.isTransaction) this.db.exec('ROLLBACK');
      throw err;
    }
  }

  private writeRows(batch: RecordBatch): void {
    // Inside the write transaction: a takeover either committed before (and is seen here) or waits.
    const lost = this.ownedElsewhere(batch);
    if (lost.length > 0) throw new SessionsTakenOverError(lost);
    for (const s of batch.sessionsStarted) {
      const inserted = this.insSession.run(s.id, s.protocol, s.identityId, s.identityName, s.identityKind, s.clientAddr, s.applicationName,
        s.connectionId, s.connectionName, s.targetHost, s.targetPort, s.targetDatabase, s.targetUser, s.startedAt, s.recordingMode,
        sessionClaimsColumn(s), s.authMethod ?? null, batch.gatewayId).changes > 0;
      if (!inserted) {
        const r = this.storedSession.get(s.id) as { started_at: number; identity_id: string; connection_id: string } | undefined;
        if (!r || Number(r.started_at) !== s.startedAt || r.identity_id !== s.identityId || r.connection_id !== s.connectionId) {
          throw new Error(`the store holds a different session ${s.id}`);
        }
      }
    }
    for (const e of batch.events) {
      if (this.insEvent.run(e.sessionId, e.seq, e.ts, e.type, e.data, e.hash).changes === 0) {
        const r = this.storedEvent.get(e.sessionId, e.seq) as { ts: number; type: string; data: string; hash: string } | undefined;
        if (!r || Number(r.ts) !== e.ts || r.type !== e.type || r.data !== e.data || r.hash !== e.hash) throw new Error(`the store holds a different event #${e.seq} of session ${e.sessionId}`);
      }
    }
    for (const e of batch.sessionsEnded) this.endSession.run(e.endedAt, e.endReason, e.eventCount, e.sessionId);
    for (const c of batch.checkpoints) this.insCheckpoint.run(c.sessionId, c.seq, c.payload, c.keyId, c.signature);
    for (const x of batch.seals) {
      if (this.insSeal.run(x.gatewayId, x.position, x.sessionId, x.payload, x.hash, x.keyId, x.signature).changes === 0) {
        const r = this.storedSeal.get(x.gatewayId, x.position) as { session_id: string; hash: string } | undefined;
        if (!r || r.hash !== x.hash || r.session_id !== x.sessionId) throw new Error(`the store holds a different seal at position ${x.position} of gateway ${x.gatewayId}`);
      }
    }
  }

  /** Sessions the batch writes to that exist and belong to another gateway. */
  private ownedElsewhere(batch: RecordBatch): SessionOwner[] {
    const lost: SessionOwner[] = [];
    for (const id of new Set(sessionIdsOf(batch))) {
      const r = this.ownerOf.get(id) as { gateway_id: string } | undefined;
      if (r && r.gateway_id !== batch.gatewayId) lost.push({ sessionId: id, gatewayId: r.gateway_id });
    }
    return lost;
  }
}
