import type { DatabaseSync, StatementSync } from 'node:sqlite';
import type { RecordBatch } from '../types.ts';
import { sessionClaimsColumn } from '../row-mapping.ts';

/** Writes one group-commit batch in a single transaction (one fsync). */
export class RecordBatchWriter {
  private readonly db: DatabaseSync;
  private readonly insSession: StatementSync;
  private readonly insEvent: StatementSync;
  private readonly endSession: StatementSync;
  private readonly insCheckpoint: StatementSync;
  private readonly insSeal: StatementSync;

  constructor(db: DatabaseSync) {
    this.db = db;
    this.insSession = db.prepare(`INSERT INTO sessions (id, protocol, identity_id, identity_name, identity_kind, client_addr,
      application_name, connection_id, connection_name, target_host, target_port, target_database, target_user, started_at, recording,
      identity_claims, auth_method)
      VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`);
    this.insEvent = db.prepare('INSERT INTO events (session_id, seq, ts, type, data, hash) VALUES (?, ?, ?, ?, ?, ?)');
    this.insCheckpoint = db.prepare('INSERT OR REPLACE INTO checkpoints (session_id, seq, payload, key_id, signature) VALUES (?, ?, ?, ?, ?)');
    this.insSeal = db.prepare('INSERT INTO seals (gateway_id, position, session_id, payload, hash, key_id, signature) VALUES (?, ?, ?, ?, ?, ?, ?)');
    this.endSession = db.prepare('UPDATE sessions SET ended_at = ?, end_reason = ?, event_count = ? WHERE id = ?');
  }

  write(batch: RecordBatch): void {
    this.db.exec('BEGIN IMMEDIATE');
    try {
      for (const s of batch.sessionsStarted) {
        this.insSession.run(s.id, s.protocol, s.identityId, s.identityName, s.identityKind, s.clientAddr, s.applicationName,
          s.connectionId, s.connectionName, s.targetHost, s.targetPort, s.targetDatabase, s.targetUser, s.startedAt, s.recordingMode,
          sessionClaimsColumn(s), s.authMethod ?? null);
      }
      for (const e of batch.events) this.insEvent.run(e.sessionId, e.seq, e.ts, e.type, e.data, e.hash);
      for (const e of batch.sessionsEnded) this.endSession.run(e.endedAt, e.endReason, e.eventCount, e.sessionId);
      for (const c of batch.checkpoints) this.insCheckpoint.run(c.sessionId, c.seq, c.payload, c.keyId, c.signature);
      for (const x of batch.seals) this.insSeal.run(x.gatewayId, x.position, x.sessionId, x.payload, x.hash, x.keyId, x.signature);
      this.db.exec('COMMIT');
    } catch (err) {
      if (this.db.isTransaction) this.db.exec('ROLLBACK');
      throw err;
    }
  }
}
