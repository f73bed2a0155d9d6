import { DatabaseSync, type StatementSync } from 'node:sqlite';
import { chmodSync, closeSync, mkdirSync, openSync } from 'node:fs';
import path from 'node:path';
import { MIGRATIONS } from './migrations.ts';
import { RecordWriterThread } from './record-writer.ts';
import { OverlappedRecordWriter } from './record-writer-overlapped.ts';
import { RecordBatchWriter } from './record-batch-sql.ts';
import { JournalRecordWriter } from './record-journal.ts';
import { REVIEW_FLAGS, ftsQuery, indexedEvent } from '../search-text.ts';
import type {
  CheckpointRow, SealRow, SigningKeyRow,
  Connection, ConnectorRecord, EventRow, Identity, RecordBatch, SessionFilter, SessionRow, Store, TokenRecord,
  PublicKeyRecord, AccessAction, AccessGrant, GroupMember, GroupRecord, NewAccessGrant,
} from '../types.ts';
import { CLAIM_NAME } from '../types.ts';
import type { IdentityClaims, PendingLogin, PendingLoginKey, PendingLoginStatus, ApprovalRow, ApprovalStatus, AuditEntryRow, PolicyVersion, PolicyVersionInfo, SessionOwner, TakenOverSession } from '../types.ts';
import { PENDING_LOGIN_COLUMNS, pendingLoginLookup, pendingLoginValues, toPendingLogin } from '../sso-rows.ts';

import {
  ACCESS_GRANT_ORDER, OUTCOME_SQL, ACCESS_GRANT_SELECT, GROUP_MEMBER_SELECT, identityWorkloadColumns, toAccessGrant, toConnection, toConnector, toEvent, toGroup,
  toGroupMember, toIdentity, toPublicKey, APPROVAL_COLUMNS, approvalValues, toApproval, toAuditEntry, toPolicyVersion, toPolicyVersionInfo, toSeal, toSession, toToken, type Row,
} from '../row-mapping.ts';

/**
 * Embedded store: one SQLite file in the data directory, WAL mode, synchronous=FULL so that a
 * committed batch survives power loss. node:sqlite is synchronous; a commit costs one fsync
 * (0.1–0.2 ms on this class of machine when idle, 1 ms and more under load), which the recorder
 * amortises by grouping events. Recording batches are written as `recording.writer` says:
 * `inline` (the default) commits and syncs on the event loop, which stops every session's relay
 * for the fsync; `overlapped` commits on the event loop without a sync and runs the fdatasync that
 * makes a batch durable on libuv's thread pool, one at a time, while the relay goes on
 * (record-writer-overlapped.ts); `thread` commits and syncs on a worker thread. On 2 cores the
 * three measured alike in TPS and inline cheapest in CPU per transaction (docs/performance.md).
 */
export type RecordWriterMode = 'inline' | 'thread' | 'overlapped' | 'journal';
export const RECORD_WRITER_MODES: readonly RecordWriterMode[] = ['inline', 'thread', 'overlapped', 'journal'];
/**
 * A store opened without a gateway's configuration (tools, tests) commits inline; the gateway's
 * own default is the journal (config.ts), which only one process may hold.
 */
export const DEFAULT_RECORD_WRITER: RecordWriterMode = 'inline';

export class SqliteStore implements Store {
  readonly db: DatabaseSync;
  private readonly stmts = new Map<string, StatementSync>();
  /** Recording batches: committed inline (blocking the loop for one fsync), on a writer thread, or overlapped. */
  private readonly writer: RecordWriterThread | OverlappedRecordWriter | JournalRecordWriter | null;
  /** The journal writer, when recordings are journaled first: reads apply what it holds first. */
  private readonly journal: JournalRecordWriter | null;
  private readonly inlineWriter: RecordBatchWriter | null;

  constructor(file: string, options: { recordWriter?: RecordWriterMode; fsync?: boolean; journalBytes?: number } = {}) {
    mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
    // Recordings and token hashes are for the gateway's eyes only; SQLite gives the -wal and
    // -shm files the same mode as the database file.
    closeSync(openSync(file, 'a', 0o600));
    chmodSync(file, 0o600);
    this.db = new DatabaseSync(file);
    // fsync=false (synchronous=NORMAL) still survives a crash of the gateway process, but not
    // of the machine: the last commits may be lost on power failure. Off by default.
    const sync = options.fsync === false ? 'NORMAL' : 'FULL';
    this.db.exec(`PRAGMA journal_mode=WAL; PRAGMA synchronous=${sync}; PRAGMA foreign_keys=ON; PRAGMA busy_timeout=5000;`);
    this.migrate();
    const mode: RecordWriterMode = options.recordWriter ?? DEFAULT_RECORD_WRITER;
    this.journal = mode === 'journal' ? new JournalRecordWriter(file, { fsync: sync === 'FULL', capacity: options.journalBytes }) : null;
    this.writer = mode === 'thread' ? new RecordWriterThread(file, sync) : mode === 'overlapped' ? new OverlappedRecordWriter(file, sync === 'FULL') : this.journal;
    this.inlineWriter = mode === 'inline' ? new RecordBatchWriter(this.db) : null;
  }

  private migrate(): void {
    this.db.exec('CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)');
    const row = this.db.prepare('SELECT max(version) AS v FROM schema_migrations').get() as Row | undefined;
    const current = Number(row?.v ?? 0);
    for (let v = current + 1; v <= MIGRATIONS.length; v++) {
      this.db.exec('BEGIN IMMEDIATE');
      try {
        this.db.exec(MIGRATIONS[v - 1]);
        this.db.prepare('INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)').run(v, Date.now());
        this.db.exec('COMMIT');
      } catch (err) {
        this.db.exec('ROLLBACK');
        throw err;
      }
    }
  }

  private q(sql: string): StatementSync {
    // Everything released to a client is visible to a read here: journaled rows are applied first
    // (not inside a transaction of this connection, which would wait on the writer's lock).
    if (this.journal && !this.db.isTransaction) this.applyJournaled();
    let s = this.stmts.get(sql);
    if (!s) {
      s = this.db.prepare(sql);
      this.stmts.set(sql, s);
    }
    return s;
  }

  async createIdentity(i: Identity): Promise<void> {
    this.q('INSERT INTO identities (id, name, kind, is_admin, created_at, claims, auth_source, workload_groups) VALUES (?, ?, ?, ?, ?, ?, ?, ?)')
      .run(i.id, i.name, i.kind, i.isAdmin ? 1 : 0, i.createdAt, ...identityWorkloadColumns(i));
  }

  async getIdentityByName(name: string): Promise<Identity | undefined> {
    const r = this.q('SELECT * FROM identities WHERE name = ?').get(name) as Row | undefined;
    return r ? toIdentity(r) : undefined;
  }

  async getIdentity(id: string): Promise<Identity | undefined> {
    const r = this.q('SELECT * FROM identities WHERE id = ?').get(id) as Row | undefined;
    return r ? toIdentity(r) : undefined;
  }

  async listIdentities(): Promise<Identity[]> {
    return (this.q('SELECT * FROM identities ORDER BY name').all() as Row[]).map(toIdentity);
  }

  async deleteIdentity(id: string): Promise<void> {
    this.q('DELETE FROM identities WHERE id = ?').run(id);
  }

  async createToken(t: TokenRecord): Promise<void> {
    this.q('INSERT INTO tokens (id, identity_id, token_hash, created_at, expires_at, revoked_at) VALUES (?, ?, ?, ?, ?, ?)')
      .run(t.id, t.identityId, t.tokenHash, t.createdAt, t.expiresAt, t.revokedAt);
  }

  async getTokenByHash(hash: string): Promise<TokenRecord | undefined> {
    const r = this.q('SELECT * FROM tokens WHERE token_hash = ?').get(hash) as Row | undefined;
    return r ? toToken(r) : undefined;
  }

  async listTokens(identityId?: string): Promise<TokenRecord[]> {
    const rows = identityId
      ? this.q('SELECT * FROM tokens WHERE identity_id = ? ORDER BY created_at').all(identityId)
      : this.q('SELECT * FROM tokens ORDER BY created_at').all();
    return (rows as Row[]).map(toToken);
  }

  async revokeToken(id: string, at: number): Promise<boolean> {
    return Number(this.q('UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL').run(at, id).changes) > 0;
  }

  async revokeTokensOf(identityId: string, at: number): Promise<number> {
    return Number(this.q('UPDATE tokens SET revoked_at = ? WHERE identity_id = ? AND revoked_at IS NULL').run(at, identityId).changes);
  }

  async createConnection(c: Connection): Promise<void> {
    this.q(`INSERT INTO connections (id, name, type, host, port, database, username, sealed_secret, options, created_at)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`)
      .run(c.id, c.name, c.type, c.host, c.port, c.database, c.username, c.sealedSecret, JSON.stringify(c.options), c.createdAt);
  }

  async getConnectionByName(name: string): Promise<Connection | undefined> {
    const r = this.q('SELECT * FROM connections WHERE name = ?').get(name) as Row | undefined;
    return r ? toConnection(r) : undefined;
  }

  async listConnections(): Promise<Connection[]> {
    return (this.q('SELECT * FROM connections ORDER BY name').all() as Row[]).map(toConnection);
  }

  async deleteConnection(id: string): Promise<void> {
    this.q('DELETE FROM connections WHERE id = ?').run(id);
  }

  async createGroup(g: GroupRecord): Promise<void> {
    this.q('INSERT INTO groups (id, name, created_at) VALUES (?, ?, ?)').run(g.id, g.name, g.createdAt);
  }

  async getGroupByName(name: string): Promise<GroupRecord | undefined> {
    const r = this.q('SELECT * FROM groups WHERE name = ?').get(name) as Row | undefined;
    return r ? toGroup(r) : undefined;
  }

  async listGroups(): Promise<GroupRecord[]> {
    return (this.q('SELECT * FROM groups ORDER BY name').all() as Row[]).map(toGroup);
  }

  async deleteGroup(id: string): Promise<void> {
    this.q('DELETE FROM groups WHERE id = ?').run(id);
  }

  async addGroupMember(groupId: string, identityId: string, at: number): Promise<boolean> {
    return Number(this.q('INSERT INTO group_members (group_id, identity_id, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING').run(groupId, identityId, at).changes) > 0;
  }

  async removeGroupMember(groupId: string, identityId: string): Promise<boolean> {
    return Number(this.q('DELETE FROM group_members WHERE group_id = ? AND identity_id = ?').run(groupId, identityId).changes) > 0;
  }

  async listGroupMembers(groupId?: string): Promise<GroupMember[]> {
    const order = 'ORDER BY g.name, i.name';
    const rows = groupId
      ? this.q(`${GROUP_MEMBER_SELECT} WHERE m.group_id = ? ${order}`).all(groupId)
      : this.q(`${GROUP_MEMBER_SELECT} ${order}`).all();
    return (rows as Row[]).map(toGroupMember);
  }

  async listGroupsOf(identityId: string): Promise<GroupRecord[]> {
    const rows = this.q('SELECT g.* FROM groups g JOIN group_members m ON m.group_id = g.id WHERE m.identity_id = ? ORDER BY g.name').all(identityId);
    return (rows as Row[]).map(toGroup);
  }

  async addAccessGrant(g: NewAccessGrant): Promise<boolean> {
    const [identityId, groupId] = g.subjectType === 'identity' ? [g.subjectId, null] : [null, g.subjectId];
    // ON CONFLICT, not OR IGNORE: only an equal grant is skipped; a bad action still fails its CHECK.
    return Number(this.q('INSERT INTO access_grants (id, identity_id, group_id, action, connection_id, created_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING')
      .run(g.id, identityId, groupId, g.action, g.connectionId, g.createdAt).changes) > 0;
  }

  async addTemporaryConnectGrant(identityId: string, connectionId: string, expiresAt: number, id: string, now: number): Promise<void> {
    this.db.exec('BEGIN IMMEDIATE');
    try {
      const extended = Number(this.q("UPDATE access_grants SET expires_at = ? WHERE identity_id = ? AND action = 'connect' AND connection_id = ? AND expires_at IS NOT NULL")
        .run(expiresAt, identityId, connectionId).changes);
      if (extended === 0) {
        this.q("INSERT INTO access_grants (id, identity_id, group_id, action, connection_id, created_at, expires_at) VALUES (?, ?, NULL, 'connect', ?, ?, ?) ON CONFLICT DO NOTHING")
          .run(id, identityId, connectionId, now, expiresAt);
      }
      this.db.exec('COMMIT');
    } catch (err) {
      this.db.exec('ROLLBACK');
      throw err;
    }
  }

  async removeAccessGrant(subjectType: AccessGrant['subjectType'], subjectId: string, action: AccessAction, connectionId: string | null): Promise<boolean> {
    const subject = subjectType === 'identity' ? 'identity_id' : 'group_id';
    return Number(this.q(`DELETE FROM access_grants WHERE ${subject} = ? AND action = ? AND connection_id IS ?`)
      .run(subjectId, action, connectionId).changes) > 0;
  }

  async listAccessGrants(): Promise<AccessGrant[]> {
    return (this.q(`${ACCESS_GRANT_SELECT} ${ACCESS_GRANT_ORDER}`).all() as Row[]).map(toAccessGrant);
  }

  async listAccessGrantsOf(identityId: string, groupNames: string[]): Promise<AccessGrant[]> {
    const rows = this.q(`${ACCESS_GRANT_SELECT} WHERE a.identity_id = ? OR g.name IN (SELECT value FROM json_each(?)) ${ACCESS_GRANT_ORDER}`)
      .all(identityId, JSON.stringify(groupNames));
    return (rows as Row[]).map(toAccessGrant);
  }

  async addPublicKey(k: PublicKeyRecord): Promise<void> {
    this.q('INSERT INTO public_keys (id, identity_id, fingerprint, public_key, created_at) VALUES (?, ?, ?, ?, ?)')
      .run(k.id, k.identityId, k.fingerprint, k.publicKey, k.createdAt);
  }

  async getPublicKeyByFingerprint(fingerprint: string): Promise<PublicKeyRecord | undefined> {
    const r = this.q('SELECT * FROM public_keys WHERE fingerprint = ?').get(fingerprint) as Row | undefined;
    return r ? toPublicKey(r) : undefined;
  }

  async listPublicKeys(identityId?: string): Promise<PublicKeyRecord[]> {
    const rows = identityId
      ? this.q('SELECT * FROM public_keys WHERE identity_id = ? ORDER BY created_at').all(identityId)
      : this.q('SELECT * FROM public_keys ORDER BY created_at').all();
    return (rows as Row[]).map(toPublicKey);
  }

  async deletePublicKey(fingerprint: string): Promise<boolean> {
    return Number(this.q('DELETE FROM public_keys WHERE fingerprint = ?').run(fingerprint).changes) > 0;
  }

  /** The journal keeps two batches in flight (see JournalRecordWriter); SQLite commits one at a time. */
  get writeDepth(): number { return this.journal ? 2 : 1; }

  async writeBatch(batch: RecordBatch): Promise<void> {
    if (this.writer) return this.writer.write(batch);
    this.inlineWriter!.write(batch);
  }

  async listSessions(f: SessionFilter): Promise<SessionRow[]> {
    const where: string[] = [];
    const args: Array<string | number> = [];
    if (f.identity) { where.push('identity_name = ?'); args.push(f.identity); }
    if (f.connection) { where.push('connection_name = ?'); args.push(f.connection); }
    if (f.kind) { where.push('identity_kind = ?'); args.push(f.kind); }
    if (f.protocol) { where.push('protocol = ?'); args.push(f.protocol); }
    if (f.outcome) where.push(OUTCOME_SQL[f.outcome]);
    if (f.startedFrom !== undefined) { where.push('started_at >= ?'); args.push(f.startedFrom); }
    if (f.startedTo !== undefined) { where.push('started_at < ?'); args.push(f.startedTo); }
    if (f.connectionIds) { where.push('connection_id IN (SELECT value FROM json_each(?))'); args.push(JSON.stringify(f.connectionIds)); }
    for (const [name, value] of Object.entries(f.claims ?? {})) {
      if (!CLAIM_NAME.test(name)) throw new Error(`invalid claim name "${name}"`);
      where.push('json_extract(identity_claims, ?) = ?');
      args.push(`$."${name}"`, value);
    }
    if (f.search !== undefined) {
      const match = ftsQuery(f.search);
      if (match === null) return [];
      where.push('id IN (SELECT session_id FROM event_search WHERE event_search MATCH ?)');
      args.push(match);
    }
    if (f.before) { where.push('(started_at < ? OR (started_at = ? AND id < ?))'); args.push(f.before.startedAt, f.before.startedAt, f.before.id); }
    for (const flag of f.review ?? []) { where.push('(review_flags & ?) != 0'); args.push(REVIEW_FLAGS[flag]); }
    const sql = `SELECT * FROM sessions ${where.length ? 'WHERE ' + where.join(' AND ') : ''} ORDER BY started_at DESC, id DESC LIMIT ?`;
    args.push(f.limit ?? 100);
    if (this.journal) this.applyJournaled();
    return (this.db.prepare(sql).all(...args) as Row[]).map(toSession);
  }

  async indexSessionsForSearch(limit: number): Promise<number> {
    const ids = (this.q('SELECT id FROM sessions WHERE search_indexed = 0 AND ended_at IS NOT NULL ORDER BY ended_at LIMIT ?').all(limit) as Array<{ id: string }>).map((r) => r.id);
    const events = this.q('SELECT seq, type, data FROM events WHERE session_id = ? ORDER BY seq');
    const insert = this.q('INSERT INTO event_search (session_id, seq, text) VALUES (?, ?, ?)');
    const done = this.q('UPDATE sessions SET search_indexed = 1, review_flags = ? WHERE id = ?');
    for (const id of ids) {
      // One transaction per session: it is in the index whole, or not yet.
      this.db.exec('BEGIN IMMEDIATE');
      try {
        let flags = 0;
        for (const e of events.all(id) as Array<{ seq: number; type: string; data: string }>) {
          const x = indexedEvent(e.type, e.data);
          if (x.text !== null) insert.run(id, e.seq, x.text);
          flags |= x.flags;
        }
        done.run(flags, id);
        this.db.exec('COMMIT');
      } catch (err) {
        if (this.db.isTransaction) this.db.exec('ROLLBACK');
        throw err;
      }
    }
    return ids.length;
  }

  async getSession(id: string): Promise<SessionRow | undefined> {
    const r = this.q('SELECT * FROM sessions WHERE id = ?').get(id) as Row | undefined;
    return r ? toSession(r) : undefined;
  }

  async listEvents(sessionId: string, afterSeq?: number): Promise<EventRow[]> {
    const rows = (afterSeq === undefined
      ? this.q('SELECT * FROM events WHERE session_id = ? ORDER BY seq').all(sessionId)
      : this.q('SELECT * FROM events WHERE session_id = ? AND seq > ? ORDER BY seq').all(sessionId, afterSeq)) as Row[];
    return rows.map(toEvent);
  }

  async lastEvent(sessionId: string): Promise<EventRow | undefined> {
    const r = this.q('SELECT * FROM events WHERE session_id = ? ORDER BY seq DESC LIMIT 1').get(sessionId) as Row | undefined;
    return r ? toEvent(r) : undefined;
  }

  async listCheckpoints(sessionId: string): Promise<CheckpointRow[]> {
    const rows = this.q('SELECT * FROM checkpoints WHERE session_id = ? ORDER BY seq').all(sessionId) as Row[];
    return rows.map((r) => ({ sessionId: String(r.session_id), seq: Number(r.seq), payload: String(r.payload), keyId: String(r.key_id), signature: String(r.signature) }));
  }

  async getSeal(sessionId: string): Promise<SealRow | undefined> {
    const r = this.q('SELECT * FROM seals WHERE session_id = ?').get(sessionId) as Row | undefined;
    return r ? toSeal(r) : undefined;
  }

  async listSeals(): Promise<SealRow[]> {
    return (this.q('SELECT * FROM seals ORDER BY gateway_id, position').all() as Row[]).map(toSeal);
  }

  async lastSeal(gatewayId: string): Promise<SealRow | undefined> {
    const r = this.q('SELECT * FROM seals WHERE gateway_id = ? ORDER BY position DESC LIMIT 1').get(gatewayId) as Row | undefined;
    return r ? toSeal(r) : undefined;
  }

  async createConnector(c: ConnectorRecord): Promise<void> {
    this.q(`INSERT INTO connectors (id, name, created_at, enrollment_token_hash, enrollment_expires_at, enrolled_at, cert_serial, revoked_at)
      VALUES (?, ?, ?, ?, ?, ?, ?, ?)`).run(c.id, c.name, c.createdAt, c.enrollmentTokenHash, c.enrollmentExpiresAt, c.enrolledAt, c.certSerial, c.revokedAt);
  }

  async getConnectorByName(name: string): Promise<ConnectorRecord | undefined> {
    const r = this.q('SELECT * FROM connectors WHERE name = ?').get(name) as Row | undefined;
    return r ? toConnector(r) : undefined;
  }

  async listConnectors(): Promise<ConnectorRecord[]> {
    return (this.q('SELECT * FROM connectors ORDER BY name').all() as Row[]).map(toConnector);
  }

  async consumeEnrollmentToken(name: string, tokenHash: string, now: number): Promise<boolean> {
    return Number(this.q(`UPDATE connectors SET enrollment_token_hash = NULL, enrollment_expires_at = NULL
      WHERE name = ? AND enrollment_token_hash = ? AND enrollment_expires_at > ? AND revoked_at IS NULL`).run(name, tokenHash, now).changes) === 1;
  }

  async updateConnector(c: ConnectorRecord): Promise<void> {
    this.q(`UPDATE connectors SET enrollment_token_hash = ?, enrollment_expires_at = ?, enrolled_at = ?, cert_serial = ?, revoked_at = ?
      WHERE id = ?`).run(c.enrollmentTokenHash, c.enrollmentExpiresAt, c.enrolledAt, c.certSerial, c.revokedAt, c.id);
  }

  async setLegalHold(sessionId: string, hold: boolean): Promise<boolean> {
    return Number(this.q('UPDATE sessions SET legal_hold = ? WHERE id = ?').run(hold ? 1 : 0, sessionId).changes) > 0;
  }

  async listExpiredSessions(connectionId: string, endedBefore: number): Promise<SessionRow[]> {
    const rows = this.q(`SELECT * FROM sessions WHERE connection_id = ? AND ended_at IS NOT NULL AND ended_at < ? AND legal_hold = 0
      ORDER BY started_at`).all(connectionId, endedBefore) as Row[];
    return rows.map(toSession);
  }

  async deleteSessions(sessionIds: string[]): Promise<void> {
    // Rows a crash would replay from the journal must not come back after their removal.
    await this.journal?.rotateWhenIdle();
    const delEvents = this.q('DELETE FROM events WHERE session_id = ?');
    const delCheckpoints = this.q('DELETE FROM checkpoints WHERE session_id = ?');
    const delSearch = this.q('DELETE FROM event_search WHERE session_id = ?');
    const delSession = this.q('DELETE FROM sessions WHERE id = ? AND legal_hold = 0');
    const held = this.q('SELECT legal_hold FROM sessions WHERE id = ?');
    this.db.exec('BEGIN IMMEDIATE');
    try {
      for (const id of sessionIds) {
        // Checked inside the transaction: a hold placed meanwhile still wins.
        if (Number((held.get(id) as Row | undefined)?.legal_hold ?? 0) === 1) continue;
        delEvents.run(id);
        delCheckpoints.run(id);
        delSearch.run(id);
        delSession.run(id);
      }
      this.db.exec('COMMIT');
    } catch (err) {
      if (this.db.isTransaction) this.db.exec('ROLLBACK');
      throw err;
    }
  }

  async saveSigningKey(k: SigningKeyRow): Promise<void> {
    this.q('INSERT OR IGNORE INTO signing_keys (key_id, public_key, created_at) VALUES (?, ?, ?)').run(k.keyId, k.publicKeyPem, k.createdAt);
  }

  async listSigningKeys(): Promise<SigningKeyRow[]> {
    const rows = this.q('SELECT * FROM signing_keys ORDER BY created_at').all() as Row[];
    return rows.map((r) => ({ keyId: String(r.key_id), publicKeyPem: String(r.public_key), createdAt: Number(r.created_at) }));
  }

  async listOpenSessions(): Promise<SessionRow[]> {
    return (this.q('SELECT * FROM sessions WHERE ended_at IS NULL ORDER BY started_at').all() as Row[]).map(toSession);
  }

  async startGatewayLease(gatewayId: string): Promise<void> {
    const now = Date.now();
    this.q('INSERT INTO gateways (id, started_at, heartbeat_at) VALUES (?, ?, ?) ON CONFLICT (id) DO UPDATE SET started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at')
      .run(gatewayId, now, now);
  }

  async renewGatewayLease(gatewayId: string): Promise<void> {
    const now = Date.now();
    this.q('INSERT INTO gateways (id, started_at, heartbeat_at) VALUES (?, ?, ?) ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at')
      .run(gatewayId, now, now);
  }

  async takeOverSessions(gatewayId: string, o: { leaseMs: number; own: boolean }): Promise<TakenOverSession[]> {
    // One write transaction: a recording batch of the previous owner commits before it or after
    // it (and is then refused, since the sessions have changed hands).
    this.db.exec('BEGIN IMMEDIATE');
    try {
      const rows = this.q(`SELECT * FROM sessions s WHERE s.ended_at IS NULL AND (
          (? AND s.gateway_id = ?)
          OR (s.gateway_id <> ? AND NOT EXISTS (SELECT 1 FROM gateways g WHERE g.id = s.gateway_id AND g.heartbeat_at >= ?)))
        ORDER BY s.started_at`).all(o.own ? 1 : 0, gatewayId, gatewayId, Date.now() - o.leaseMs) as Row[];
      const take = this.q('UPDATE sessions SET gateway_id = ? WHERE id = ?');
      for (const r of rows) take.run(gatewayId, String(r.id));
      this.db.exec('COMMIT');
      return rows.map((r) => ({ session: { ...toSession(r), gatewayId }, previousOwner: String(r.gateway_id) }));
    } catch (err) {
      if (this.db.isTransaction) this.db.exec('ROLLBACK');
      throw err;
    }
  }

  async sessionsOwnedElsewhere(gatewayId: string, sessionIds: string[]): Promise<SessionOwner[]> {
    if (sessionIds.length === 0) return [];
    const rows = this.q('SELECT id, gateway_id FROM sessions WHERE id IN (SELECT value FROM json_each(?)) AND gateway_id <> ?')
      .all(JSON.stringify(sessionIds), gatewayId) as Row[];
    return rows.map((r) => ({ sessionId: String(r.id), gatewayId: String(r.gateway_id) }));
  }

  async createPendingLogin(l: PendingLogin): Promise<void> {
    this.q(`INSERT INTO pending_logins (${PENDING_LOGIN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`).run(...pendingLoginValues(l));
  }

  async getPendingLogin(by: PendingLoginKey): Promise<PendingLogin | undefined> {
    const [column, value] = pendingLoginLookup(by);
    const r = this.q(`SELECT * FROM pending_logins WHERE ${column} = ?`).get(value) as Row | undefined;
    return r ? toPendingLogin(r) : undefined;
  }

  async advancePendingLogin(id: string, from: PendingLoginStatus, to: PendingLoginStatus, result: { identityId?: string; error?: string; confirmHash?: string } = {}): Promise<boolean> {
    return Number(this.q(`UPDATE pending_logins SET status = ?, identity_id = coalesce(?, identity_id), error = coalesce(?, error), confirm_hash = coalesce(?, confirm_hash)
      WHERE id = ? AND status = ?`).run(to, result.identityId ?? null, result.error ?? null, result.confirmHash ?? null, id, from).changes) > 0;
  }

  async confirmPendingLogin(id: string, confirmHash: string, at: number): Promise<boolean> {
    return Number(this.q(`UPDATE pending_logins SET confirmed_at = ? WHERE id = ? AND status = 'signed-in' AND confirm_hash = ? AND confirmed_at IS NULL`)
      .run(at, id, confirmHash).changes) > 0;
  }

  async countPendingLoginFailure(id: string): Promise<number> {
    const r = this.q('UPDATE pending_logins SET code_failures = code_failures + 1 WHERE id = ? RETURNING code_failures').get(id) as Row | undefined;
    return Number(r?.code_failures ?? 0);
  }

  async deletePendingLogins(before: number): Promise<number> {
    return Number(this.q('DELETE FROM pending_logins WHERE expires_at < ?').run(before).changes);
  }

  async linkExternalIdentity(externalKey: string, identityId: string, at: number): Promise<void> {
    this.q('INSERT INTO external_identities (external_key, identity_id, created_at) VALUES (?, ?, ?)').run(externalKey, identityId, at);
  }

  async getIdentityByExternalKey(externalKey: string): Promise<Identity | undefined> {
    const r = this.q('SELECT i.* FROM identities i JOIN external_identities e ON e.identity_id = i.id WHERE e.external_key = ?').get(externalKey) as Row | undefined;
    return r ? toIdentity(r) : undefined;
  }

  async updateIdentityAttributes(identityId: string, claims: IdentityClaims, externalGroups: string[]): Promise<void> {
    this.q('UPDATE identities SET claims = ?, workload_groups = ? WHERE id = ?').run(JSON.stringify(claims), JSON.stringify(externalGroups), identityId);
  }

  async recordExchangedToken(tokenKey: string, expiresAt: number, now: number): Promise<boolean> {
    // One statement: SQLite runs one writer at a time, also across gateway processes on one file.
    return Number(this.q(`INSERT INTO exchanged_oidc_tokens (token_key, expires_at, exchanged_at) VALUES (?, ?, ?)
      ON CONFLICT (token_key) DO UPDATE SET expires_at = excluded.expires_at, exchanged_at = excluded.exchanged_at
      WHERE exchanged_oidc_tokens.expires_at < ?`).run(tokenKey, expiresAt, now, now).changes) === 1;
  }

  async deleteExchangedTokens(before: number): Promise<number> {
    return Number(this.q('DELETE FROM exchanged_oidc_tokens WHERE expires_at < ?').run(before).changes);
  }

  async addPolicyVersion(p: Omit<PolicyVersion, 'version'>): Promise<PolicyVersion> {
    // One statement: the number is taken and used by the same (serialised) write.
    const r = this.q(`INSERT INTO policy_versions (version, hash, document, source, applied_by, applied_at)
      SELECT coalesce(max(version), 0) + 1, ?, ?, ?, ?, ? FROM policy_versions RETURNING version`).get(p.hash, p.document, p.source, p.appliedBy, p.appliedAt) as Row;
    return { ...p, version: Number(r.version) };
  }

  async getPolicyVersion(version?: number): Promise<PolicyVersion | undefined> {
    const r = (version === undefined
      ? this.q('SELECT * FROM policy_versions ORDER BY version DESC LIMIT 1').get()
      : this.q('SELECT * FROM policy_versions WHERE version = ?').get(version)) as Row | undefined;
    return r ? toPolicyVersion(r) : undefined;
  }

  async listPolicyVersions(): Promise<PolicyVersionInfo[]> {
    return (this.q('SELECT version, hash, applied_by, applied_at FROM policy_versions ORDER BY version DESC').all() as Row[]).map(toPolicyVersionInfo);
  }

  async appendAuditEntry(e: AuditEntryRow): Promise<void> {
    this.q('INSERT INTO audit_log (gateway_id, seq, ts, type, data, hash, key_id, signature) VALUES (?, ?, ?, ?, ?, ?, ?, ?)')
      .run(e.gatewayId, e.seq, e.ts, e.type, e.data, e.hash, e.keyId, e.signature);
  }

  async lastAuditEntry(gatewayId: string): Promise<AuditEntryRow | undefined> {
    const r = this.q('SELECT * FROM audit_log WHERE gateway_id = ? ORDER BY seq DESC LIMIT 1').get(gatewayId) as Row | undefined;
    return r ? toAuditEntry(r) : undefined;
  }

  async listAuditEntries(sinceUs: number, limit: number): Promise<AuditEntryRow[]> {
    const rows = this.q('SELECT * FROM (SELECT * FROM audit_log WHERE ts >= ? ORDER BY ts DESC, seq DESC LIMIT ?) ORDER BY ts, seq').all(sinceUs, limit) as Row[];
    return rows.map(toAuditEntry);
  }

  async allAuditEntries(): Promise<AuditEntryRow[]> {
    return (this.q('SELECT * FROM audit_log ORDER BY gateway_id, seq').all() as Row[]).map(toAuditEntry);
  }

  async createApproval(a: ApprovalRow): Promise<void> {
    this.q(`INSERT INTO approvals (${APPROVAL_COLUMNS.join(', ')}) VALUES (${APPROVAL_COLUMNS.map(() => '?').join(', ')})`).run(...(approvalValues(a) as Array<string | number | null>));
  }

  async getApproval(id: string): Promise<ApprovalRow | undefined> {
    const r = this.q('SELECT * FROM approvals WHERE id = ?').get(id) as Row | undefined;
    return r ? toApproval(r) : undefined;
  }

  async listApprovals(f: { status?: ApprovalStatus; limit?: number }): Promise<ApprovalRow[]> {
    const rows = (f.status
      ? this.q('SELECT * FROM approvals WHERE status = ? ORDER BY created_at DESC LIMIT ?').all(f.status, f.limit ?? 1000)
      : this.q('SELECT * FROM approvals ORDER BY created_at DESC LIMIT ?').all(f.limit ?? 1000)) as Row[];
    return rows.map(toApproval);
  }

  async updateApproval(id: string, expected: ApprovalStatus, next: Pick<ApprovalRow, 'status' | 'decisions' | 'reason' | 'decidedAt'>): Promise<boolean> {
    return Number(this.q('UPDATE approvals SET status = ?, decisions = ?, reason = ?, decided_at = ? WHERE id = ? AND status = ?')
      .run(next.status, next.decisions, next.reason, next.decidedAt, id, expected).changes) === 1;
  }

  /** Applies journaled batches; a failure is logged by the recorder's next write, not thrown at a reader. */
  private applyJournaled(): void {
    try {
      this.journal!.applyPending();
    } catch {
      // Still in the journal: applied at the next try or start (see JournalRecordWriter).
    }
  }

  async close(): Promise<void> {
    await this.writer?.close();
    this.stmts.clear();
    this.db.close();
  }
}
