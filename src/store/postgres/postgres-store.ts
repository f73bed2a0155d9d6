import pg from 'pg';
import { MIGRATIONS } from './migrations.ts';
import { REVIEW_FLAGS, indexedEvent, searchWords } from '../search-text.ts';
import type {
  CheckpointRow, SealRow, SigningKeyRow,
  Connection, ConnectorRecord, EventRow, Identity, RecordBatch, SessionEnd, SessionFilter, SessionRow, Store, TokenRecord,
  PublicKeyRecord, AccessAction, AccessGrant, GroupMember, GroupRecord, NewAccessGrant,
} from '../types.ts';
import { CLAIM_NAME, SessionsTakenOverError, sessionIdsOf } from '../types.ts';
import type { IdentityClaims, PendingLogin, PendingLoginKey, PendingLoginStatus, ApprovalRow, ApprovalStatus, AuditEntryRow, PolicyVersion, PolicyVersionInfo, SessionOwner, TakenOverSession } from '../types.ts';
import { PENDING_LOGIN_COLUMNS, pendingLoginLookup, pendingLoginValues, toPendingLogin } from '../sso-rows.ts';

import {
  ACCESS_GRANT_ORDER, OUTCOME_SQL, ACCESS_GRANT_SELECT, GROUP_MEMBER_SELECT, identityWorkloadColumns, sessionClaimsColumn, toAccessGrant, toConnection, toConnector,
  toEvent, toGroup, toGroupMember, toIdentity, toPublicKey, APPROVAL_COLUMNS, approvalValues, toApproval, toAuditEntry, toPolicyVersion, toPolicyVersionInfo, toSeal, toSession, toToken, type Row,
} from '../row-mapping.ts';

/** Key of the advisory lock that serialises schema migrations across gateways starting at once. */
const MIGRATION_LOCK_KEY = 0x67617465686f7573n & 0x7fffffffffffffffn; // "gatehous"
/** Key of the advisory lock that serialises session takeovers across gateways. */
const TAKEOVER_LOCK_KEY = 0x74616b656f766572n; // "takeover"
/** Now in ms by the database server's clock. */
const STORE_NOW_MS = '(extract(epoch from clock_timestamp()) * 1000)::bigint';

export interface PostgresStoreOptions {
  /** Connections in the pool (default 10). */
  max?: number;
  /**
   * Errors of idle pooled connections (the server restarted, the network dropped). They are not
   * fatal: the next query opens a new connection, and fails if the server is still unreachable.
   */
  onIdleError?: (err: Error) => void;
}

/**
 * Shared store: the same schema and behaviour as the SQLite store, in a PostgreSQL database that
 * several gateways may share. Schema migrations run on open, serialised by an advisory lock.
 * A recording batch is one statement (one round trip, one transaction, one commit): every table's
 * rows travel as parallel arrays and are expanded server-side with unnest().
 */
export class PostgresStore implements Store {
  readonly pool: pg.Pool;

  private constructor(pool: pg.Pool) {
    this.pool = pool;
  }

  /** Connects, applies pending migrations, and returns the store. */
  static async open(url: string, options: PostgresStoreOptions = {}): Promise<PostgresStore> {
    const pool = new pg.Pool({
      connectionString: url,
      max: options.max ?? 10,
      application_name: 'gatehouse',
      connectionTimeoutMillis: 10_000,
      keepAlive: true,
    });
    pool.on('error', (err) => options.onIdleError?.(err));
    const store = new PostgresStore(pool);
    try {
      await store.migrate();
    } catch (err) {
      await pool.end().catch(() => {});
      throw err;
    }
    return store;
  }

  /** Applies every pending migration in one transaction, holding the migration lock. */
  private async migrate(): Promise<void> {
    await this.tx(async (c) => {
      await c.query('SELECT pg_advisory_xact_lock($1)', [MIGRATION_LOCK_KEY.toString()]);
      await c.query('CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)');
      const r = await c.query('SELECT coalesce(max(version), 0) AS v FROM schema_migrations');
      const current = Number((r.rows[0] as Row).v);
      for (let v = current + 1; v <= MIGRATIONS.length; v++) {
        await c.query(MIGRATIONS[v - 1]);
        await c.query('INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)', [v, Date.now()]);
      }
    });
  }

  /** Runs `fn` in a transaction on one pooled connection. */
  private async tx<T>(fn: (c: pg.PoolClient) => Promise<T>): Promise<T> {
    const c = await this.pool.connect();
    let broken = false;
    try {
      await c.query('BEGIN');
      const value = await fn(c);
      await c.query('COMMIT');
      return value;
    } catch (err) {
      try {
        await c.query('ROLLBACK');
      } catch {
        broken = true; // the connection is gone: do not hand it back to the pool
      }
      throw err;
    } finally {
      c.release(broken);
    }
  }

  private async rows(sql: string, args: unknown[] = []): Promise<Row[]> {
    return (await this.pool.query(sql, args)).rows as Row[];
  }

  private async one(sql: string, args: unknown[] = []): Promise<Row | undefined> {
    return (await this.rows(sql, args))[0];
  }

  private async changes(sql: string, args: unknown[] = []): Promise<number> {
    return (await this.pool.query(sql, args)).rowCount ?? 0;
  }

  async createIdentity(i: Identity): Promise<void> {
    await this.pool.query(`INSERT INTO identities (id, name, kind, is_admin, created_at, claims, auth_source, workload_groups)
      VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`, [i.id, i.name, i.kind, i.isAdmin, i.createdAt, ...identityWorkloadColumns(i)]);
  }

  async getIdentityByName(name: string): Promise<Identity | undefined> {
    const r = await this.one('SELECT * FROM identities WHERE name = $1', [name]);
    return r ? toIdentity(r) : undefined;
  }

  async getIdentity(id: string): Promise<Identity | undefined> {
    const r = await this.one('SELECT * FROM identities WHERE id = $1', [id]);
    return r ? toIdentity(r) : undefined;
  }

  async listIdentities(): Promise<Identity[]> {
    return (await this.rows('SELECT * FROM identities ORDER BY name')).map(toIdentity);
  }

  async deleteIdentity(id: string): Promise<void> {
    await this.pool.query('DELETE FROM identities WHERE id = $1', [id]);
  }

  async createToken(t: TokenRecord): Promise<void> {
    await this.pool.query('INSERT INTO tokens (id, identity_id, token_hash, created_at, expires_at, revoked_at) VALUES ($1, $2, $3, $4, $5, $6)',
      [t.id, t.identityId, t.tokenHash, t.createdAt, t.expiresAt, t.revokedAt]);
  }

  async getTokenByHash(hash: string): Promise<TokenRecord | undefined> {
    const r = await this.one('SELECT * FROM tokens WHERE token_hash = $1', [hash]);
    return r ? toToken(r) : undefined;
  }

  async listTokens(identityId?: string): Promise<TokenRecord[]> {
    const rows = identityId
      ? await this.rows('SELECT * FROM tokens WHERE identity_id = $1 ORDER BY created_at', [identityId])
      : await this.rows('SELECT * FROM tokens ORDER BY created_at');
    return rows.map(toToken);
  }

  async revokeToken(id: string, at: number): Promise<boolean> {
    return await this.changes('UPDATE tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL', [at, id]) > 0;
  }

  async revokeTokensOf(identityId: string, at: number): Promise<number> {
    return this.changes('UPDATE tokens SET revoked_at = $1 WHERE identity_id = $2 AND revoked_at IS NULL', [at, identityId]);
  }

  async createConnection(c: Connection): Promise<void> {
    await this.pool.query(`INSERT INTO connections (id, name, type, host, port, database, username, sealed_secret, options, created_at)
      VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
    [c.id, c.name, c.type, c.host, c.port, c.database, c.username, c.sealedSecret, JSON.stringify(c.options), c.createdAt]);
  }

  async getConnectionByName(name: string): Promise<Connection | undefined> {
    const r = await this.one('SELECT * FROM connections WHERE name = $1', [name]);
    return r ? toConnection(r) : undefined;
  }

  async listConnections(): Promise<Connection[]> {
    return (await this.rows('SELECT * FROM connections ORDER BY name')).map(toConnection);
  }

  async deleteConnection(id: string): Promise<void> {
    await this.pool.query('DELETE FROM connections WHERE id = $1', [id]);
  }

  async createGroup(g: GroupRecord): Promise<void> {
    await this.pool.query('INSERT INTO groups (id, name, created_at) VALUES ($1, $2, $3)', [g.id, g.name, g.createdAt]);
  }

  async getGroupByName(name: string): Promise<GroupRecord | undefined> {
    const r = await this.one('SELECT * FROM groups WHERE name = $1', [name]);
    return r ? toGroup(r) : undefined;
  }

  async listGroups(): Promise<GroupRecord[]> {
    return (await this.rows('SELECT * FROM groups ORDER BY name')).map(toGroup);
  }

  async deleteGroup(id: string): Promise<void> {
    await this.pool.query('DELETE FROM groups WHERE id = $1', [id]);
  }

  async addGroupMember(groupId: string, identityId: string, at: number): Promise<boolean> {
    return await this.changes('INSERT INTO group_members (group_id, identity_id, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING',
      [groupId, identityId, at]) > 0;
  }

  async removeGroupMember(groupId: string, identityId: string): Promise<boolean> {
    return await this.changes('DELETE FROM group_members WHERE group_id = $1 AND identity_id = $2', [groupId, identityId]) > 0;
  }

  async listGroupMembers(groupId?: string): Promise<GroupMember[]> {
    const order = 'ORDER BY g.name, i.name';
    const rows = groupId
      ? await this.rows(`${GROUP_MEMBER_SELECT} WHERE m.group_id = $1 ${order}`, [groupId])
      : await this.rows(`${GROUP_MEMBER_SELECT} ${order}`);
    return rows.map(toGroupMember);
  }

  async listGroupsOf(identityId: string): Promise<GroupRecord[]> {
    const rows = await this.rows('SELECT g.* FROM groups g JOIN group_members m ON m.group_id = g.id WHERE m.identity_id = $1 ORDER BY g.name', [identityId]);
    return rows.map(toGroup);
  }

  async addAccessGrant(g: NewAccessGrant): Promise<boolean> {
    const [identityId, groupId] = g.subjectType === 'identity' ? [g.subjectId, null] : [null, g.subjectId];
    return await this.changes(`INSERT INTO access_grants (id, identity_id, group_id, action, connection_id, created_at) VALUES ($1, $2, $3, $4, $5, $6)
      ON CONFLICT DO NOTHING`, [g.id, identityId, groupId, g.action, g.connectionId, g.createdAt]) > 0;
  }

  async addTemporaryConnectGrant(identityId: string, connectionId: string, expiresAt: number, id: string, now: number): Promise<void> {
    await this.tx(async (c) => {
      const extended = await c.query("UPDATE access_grants SET expires_at = $1 WHERE identity_id = $2 AND action = 'connect' AND connection_id = $3 AND expires_at IS NOT NULL",
        [expiresAt, identityId, connectionId]);
      if ((extended.rowCount ?? 0) === 0) {
        await c.query("INSERT INTO access_grants (id, identity_id, group_id, action, connection_id, created_at, expires_at) VALUES ($1, $2, NULL, 'connect', $3, $4, $5) ON CONFLICT DO NOTHING",
          [id, identityId, connectionId, now, expiresAt]);
      }
    });
  }

  async removeAccessGrant(subjectType: AccessGrant['subjectType'], subjectId: string, action: AccessAction, connectionId: string | null): Promise<boolean> {
    const subject = subjectType === 'identity' ? 'identity_id' : 'group_id';
    return await this.changes(`DELETE FROM access_grants WHERE ${subject} = $1 AND action = $2 AND connection_id IS NOT DISTINCT FROM $3`,
      [subjectId, action, connectionId]) > 0;
  }

  async listAccessGrants(): Promise<AccessGrant[]> {
    return (await this.rows(`${ACCESS_GRANT_SELECT} ${ACCESS_GRANT_ORDER}`)).map(toAccessGrant);
  }

  async listAccessGrantsOf(identityId: string, groupNames: string[]): Promise<AccessGrant[]> {
    const rows = await this.rows(`${ACCESS_GRANT_SELECT} WHERE a.identity_id = $1 OR g.name = ANY($2::text[]) ${ACCESS_GRANT_ORDER}`, [identityId, groupNames]);
    return rows.map(toAccessGrant);
  }

  async addPublicKey(k: PublicKeyRecord): Promise<void> {
    await this.pool.query('INSERT INTO public_keys (id, identity_id, fingerprint, public_key, created_at) VALUES ($1, $2, $3, $4, $5)',
      [k.id, k.identityId, k.fingerprint, k.publicKey, k.createdAt]);
  }

  async getPublicKeyByFingerprint(fingerprint: string): Promise<PublicKeyRecord | undefined> {
    const r = await this.one('SELECT * FROM public_keys WHERE fingerprint = $1', [fingerprint]);
    return r ? toPublicKey(r) : undefined;
  }

  async listPublicKeys(identityId?: string): Promise<PublicKeyRecord[]> {
    const rows = identityId
      ? await this.rows('SELECT * FROM public_keys WHERE identity_id = $1 ORDER BY created_at', [identityId])
      : await this.rows('SELECT * FROM public_keys ORDER BY created_at');
    return rows.map(toPublicKey);
  }

  async deletePublicKey(fingerprint: string): Promise<boolean> {
    return await this.changes('DELETE FROM public_keys WHERE fingerprint = $1', [fingerprint]) > 0;
  }

  /**
   * One statement, hence one transaction and one commit: all of the batch becomes durable, or
   * none of it (a constraint violation anywhere rolls back every part).
   */
  async writeBatch(batch: RecordBatch): Promise<void> {
    if (batch.sessionsStarted.length + batch.events.length + batch.sessionsEnded.length + batch.checkpoints.length + batch.seals.length === 0) return;
    let lost: Row[];
    try {
      lost = (await this.pool.query({ name: 'gatehouse_write_batch', text: WRITE_BATCH_SQL, values: writeBatchValues(batch) })).rows as Row[];
    } catch (err) {
      // A unique violation is what a retry after an ambiguous commit (the connection dropped
      // after COMMIT) meets: its rows are there already. Write again in a transaction that skips
      // rows already stored only if they are exactly this batch's; anything else is refused.
      if ((err as { code?: string }).code !== '23505') throw err;
      await this.writeBatchAgain(batch);
      return;
    }
    if (lost.length > 0) throw takenOver(lost);
  }

  private async writeBatchAgain(batch: RecordBatch): Promise<void> {
    const c = await this.pool.connect();
    try {
      await c.query('BEGIN');
      const lost = (await c.query({ text: WRITE_BATCH_SKIPPING_STORED_SQL, values: writeBatchValues(batch) })).rows as Row[];
      if (lost.length > 0) throw takenOver(lost);
      const mismatch = await firstMismatch(c, batch);
      if (mismatch) {
        await c.query('ROLLBACK');
        throw new Error(`the store holds a different ${mismatch} (written by another gateway?)`);
      }
      await c.query('COMMIT');
    } catch (err) {
      await c.query('ROLLBACK').catch(() => undefined);
      throw err;
    } finally {
      c.release();
    }
  }

  async listSessions(f: SessionFilter): Promise<SessionRow[]> {
    const where: string[] = [];
    const args: unknown[] = [];
    if (f.identity) { args.push(f.identity); where.push(`identity_name = $${args.length}`); }
    if (f.connection) { args.push(f.connection); where.push(`connection_name = $${args.length}`); }
    if (f.kind) { args.push(f.kind); where.push(`identity_kind = $${args.length}`); }
    if (f.protocol) { args.push(f.protocol); where.push(`protocol = $${args.length}`); }
    if (f.outcome) where.push(OUTCOME_SQL[f.outcome]);
    if (f.startedFrom !== undefined) { args.push(f.startedFrom); where.push(`started_at >= $${args.length}`); }
    if (f.startedTo !== undefined) { args.push(f.startedTo); where.push(`started_at < $${args.length}`); }
    if (f.connectionIds) { args.push(f.connectionIds); where.push(`connection_id = ANY($${args.length}::text[])`); }
    for (const [name, value] of Object.entries(f.claims ?? {})) {
      if (!CLAIM_NAME.test(name)) throw new Error(`invalid claim name "${name}"`);
      args.push(name, value);
      where.push(`(identity_claims::jsonb ->> $${args.length - 1}) = $${args.length}`);
    }
    if (f.search !== undefined) {
      const words = searchWords(f.search);
      if (!words) return [];
      args.push(words.join(' '));
      where.push(`id IN (SELECT session_id FROM event_search WHERE tsv @@ plainto_tsquery('simple', $${args.length}))`);
    }
    for (const flag of f.review ?? []) { args.push(REVIEW_FLAGS[flag]); where.push(`(review_flags & $${args.length}) != 0`); }
    if (f.before) {
      args.push(f.before.startedAt, f.before.id);
      where.push(`(started_at < $${args.length - 1} OR (started_at = $${args.length - 1} AND id < $${args.length}))`);
    }
    args.push(f.limit ?? 100);
    const sql = `SELECT * FROM sessions ${where.length ? 'WHERE ' + where.join(' AND ') : ''} ORDER BY started_at DESC, id DESC LIMIT $${args.length}`;
    return (await this.rows(sql, args)).map(toSession);
  }

  async indexSessionsForSearch(limit: number): Promise<number> {
    const ids = (await this.rows('SELECT id FROM sessions WHERE NOT search_indexed AND ended_at IS NOT NULL ORDER BY ended_at LIMIT $1', [limit])).map((r) => String(r.id));
    for (const id of ids) {
      const rows: Array<[number, string]> = [];
      let flags = 0;
      for (const e of await this.rows('SELECT seq, type, data FROM events WHERE session_id = $1 ORDER BY seq', [id])) {
        const x = indexedEvent(String(e.type), String(e.data));
        if (x.text !== null) rows.push([Number(e.seq), x.text.replace(/\0/g, '')]);
        flags |= x.flags;
      }
      // One statement per session: it is in the index whole, or not yet (another gateway may index it too).
      await this.rows(`WITH added AS (
          INSERT INTO event_search (session_id, seq, text) SELECT $1, s, t FROM unnest($2::bigint[], $3::text[]) AS u(s, t)
          WHERE EXISTS (SELECT 1 FROM sessions WHERE id = $1) ON CONFLICT DO NOTHING)
        UPDATE sessions SET search_indexed = true, review_flags = $4 WHERE id = $1`, [id, rows.map((r) => r[0]), rows.map((r) => r[1]), flags]);
    }
    return ids.length;
  }

  async getSession(id: string): Promise<SessionRow | undefined> {
    const r = await this.one('SELECT * FROM sessions WHERE id = $1', [id]);
    return r ? toSession(r) : undefined;
  }

  async listEvents(sessionId: string, afterSeq?: number): Promise<EventRow[]> {
    if (afterSeq !== undefined) return (await this.rows('SELECT * FROM events WHERE session_id = $1 AND seq > $2 ORDER BY seq', [sessionId, afterSeq])).map(toEvent);
    return (await this.rows('SELECT * FROM events WHERE session_id = $1 ORDER BY seq', [sessionId])).map(toEvent);
  }

  async lastEvent(sessionId: string): Promise<EventRow | undefined> {
    const r = await this.one('SELECT * FROM events WHERE session_id = $1 ORDER BY seq DESC LIMIT 1', [sessionId]);
    return r ? toEvent(r) : undefined;
  }

  async listCheckpoints(sessionId: string): Promise<CheckpointRow[]> {
    const rows = await this.rows('SELECT * FROM checkpoints WHERE session_id = $1 ORDER BY seq', [sessionId]);
    return rows.map((r) => ({ sessionId: String(r.session_id), seq: Number(r.seq), payload: String(r.payload), keyId: String(r.key_id), signature: String(r.signature) }));
  }

  async getSeal(sessionId: string): Promise<SealRow | undefined> {
    const r = await this.one('SELECT * FROM seals WHERE session_id = $1', [sessionId]);
    return r ? toSeal(r) : undefined;
  }

  async listSeals(): Promise<SealRow[]> {
    return (await this.rows('SELECT * FROM seals ORDER BY gateway_id, position')).map(toSeal);
  }

  async lastSeal(gatewayId: string): Promise<SealRow | undefined> {
    const r = await this.one('SELECT * FROM seals WHERE gateway_id = $1 ORDER BY position DESC LIMIT 1', [gatewayId]);
    return r ? toSeal(r) : undefined;
  }

  async saveSigningKey(k: SigningKeyRow): Promise<void> {
    await this.pool.query('INSERT INTO signing_keys (key_id, public_key, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING',
      [k.keyId, k.publicKeyPem, k.createdAt]);
  }

  async listSigningKeys(): Promise<SigningKeyRow[]> {
    const rows = await this.rows('SELECT * FROM signing_keys ORDER BY created_at');
    return rows.map((r) => ({ keyId: String(r.key_id), publicKeyPem: String(r.public_key), createdAt: Number(r.created_at) }));
  }

  async listOpenSessions(): Promise<SessionRow[]> {
    return (await this.rows('SELECT * FROM sessions WHERE ended_at IS NULL ORDER BY started_at')).map(toSession);
  }

  // Lease times are the database server's clock, so the gateways' clocks need not agree.

  async startGatewayLease(gatewayId: string): Promise<void> {
    await this.pool.query(`INSERT INTO gateways (id, started_at, heartbeat_at) VALUES ($1, ${STORE_NOW_MS}, ${STORE_NOW_MS})
      ON CONFLICT (id) DO UPDATE SET started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at`, [gatewayId]);
  }

  async renewGatewayLease(gatewayId: string): Promise<void> {
    await this.pool.query(`INSERT INTO gateways (id, started_at, heartbeat_at) VALUES ($1, ${STORE_NOW_MS}, ${STORE_NOW_MS})
      ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at`, [gatewayId]);
  }

  async takeOverSessions(gatewayId: string, o: { leaseMs: number; own: boolean }): Promise<TakenOverSession[]> {
    return this.tx(async (c) => {
      // One takeover at a time across the gateways (two live gateways finding the same dead one
      // would otherwise lock its rows in different orders and may deadlock).
      await c.query('SELECT pg_advisory_xact_lock($1)', [TAKEOVER_LOCK_KEY.toString()]);
      // The lapsed leases are locked too: a renewal that commits first makes its gateway live again
      // (its sessions are then skipped); one that comes later finds its sessions gone.
      const r = await c.query(`WITH lapsed AS (
          SELECT id FROM gateways WHERE id <> $1 AND heartbeat_at < ${STORE_NOW_MS} - $2 FOR UPDATE
        ), taken AS (
          SELECT s.id, s.gateway_id FROM sessions s WHERE s.ended_at IS NULL AND (
            ($3 AND s.gateway_id = $1) OR s.gateway_id IN (SELECT id FROM lapsed)
            OR (s.gateway_id <> $1 AND NOT EXISTS (SELECT 1 FROM gateways g WHERE g.id = s.gateway_id)))
          FOR UPDATE OF s
        )
        UPDATE sessions s SET gateway_id = $1 FROM taken WHERE s.id = taken.id
        RETURNING s.*, taken.gateway_id AS previous_owner`, [gatewayId, o.leaseMs, o.own]);
      return (r.rows as Row[])
        .map((row) => ({ session: toSession(row), previousOwner: String(row.previous_owner) }))
        .sort((a, b) => a.session.startedAt - b.session.startedAt);
    });
  }

  async sessionsOwnedElsewhere(gatewayId: string, sessionIds: string[]): Promise<SessionOwner[]> {
    if (sessionIds.length === 0) return [];
    const rows = await this.rows('SELECT id, gateway_id FROM sessions WHERE id = ANY($1::text[]) AND gateway_id <> $2', [sessionIds, gatewayId]);
    return rows.map((r) => ({ sessionId: String(r.id), gatewayId: String(r.gateway_id) }));
  }

  async createConnector(c: ConnectorRecord): Promise<void> {
    await this.pool.query(`INSERT INTO connectors (id, name, created_at, enrollment_token_hash, enrollment_expires_at, enrolled_at, cert_serial, revoked_at)
      VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`, [c.id, c.name, c.createdAt, c.enrollmentTokenHash, c.enrollmentExpiresAt, c.enrolledAt, c.certSerial, c.revokedAt]);
  }

  async getConnectorByName(name: string): Promise<ConnectorRecord | undefined> {
    const r = await this.one('SELECT * FROM connectors WHERE name = $1', [name]);
    return r ? toConnector(r) : undefined;
  }

  async listConnectors(): Promise<ConnectorRecord[]> {
    return (await this.rows('SELECT * FROM connectors ORDER BY name')).map(toConnector);
  }

  async consumeEnrollmentToken(name: string, tokenHash: string, now: number): Promise<boolean> {
    return await this.changes(`UPDATE connectors SET enrollment_token_hash = NULL, enrollment_expires_at = NULL
      WHERE name = $1 AND enrollment_token_hash = $2 AND enrollment_expires_at > $3 AND revoked_at IS NULL`, [name, tokenHash, now]) === 1;
  }

  async updateConnector(c: ConnectorRecord): Promise<void> {
    await this.pool.query(`UPDATE connectors SET enrollment_token_hash = $1, enrollment_expires_at = $2, enrolled_at = $3, cert_serial = $4,
      revoked_at = $5 WHERE id = $6`, [c.enrollmentTokenHash, c.enrollmentExpiresAt, c.enrolledAt, c.certSerial, c.revokedAt, c.id]);
  }

  async setLegalHold(sessionId: string, hold: boolean): Promise<boolean> {
    return await this.changes('UPDATE sessions SET legal_hold = $1 WHERE id = $2', [hold, sessionId]) > 0;
  }

  async listExpiredSessions(connectionId: string, endedBefore: number): Promise<SessionRow[]> {
    const rows = await this.rows(`SELECT * FROM sessions WHERE connection_id = $1 AND ended_at IS NOT NULL AND ended_at < $2 AND NOT legal_hold
      ORDER BY started_at`, [connectionId, endedBefore]);
    return rows.map(toSession);
  }

  async deleteSessions(sessionIds: string[]): Promise<void> {
    if (sessionIds.length === 0) return;
    await this.tx(async (c) => {
      // The session rows are locked before the hold is read: a hold placed meanwhile either
      // committed first (and is seen here) or waits for this transaction (and finds no row).
      const held = await c.query('SELECT id FROM sessions WHERE id = ANY($1::text[]) AND legal_hold ORDER BY id FOR UPDATE', [sessionIds]);
      const keep = new Set((held.rows as Row[]).map((r) => String(r.id)));
      const ids = [...new Set(sessionIds)].filter((id) => !keep.has(id));
      if (ids.length === 0) return;
      await c.query('DELETE FROM events WHERE session_id = ANY($1::text[])', [ids]);
      await c.query('DELETE FROM checkpoints WHERE session_id = ANY($1::text[])', [ids]);
      await c.query('DELETE FROM event_search WHERE session_id = ANY($1::text[])', [ids]);
      await c.query('DELETE FROM sessions WHERE id = ANY($1::text[]) AND NOT legal_hold', [ids]);
    });
  }

  async createPendingLogin(l: PendingLogin): Promise<void> {
    await this.pool.query(`INSERT INTO pending_logins (${PENDING_LOGIN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)`, pendingLoginValues(l));
  }

  async getPendingLogin(by: PendingLoginKey): Promise<PendingLogin | undefined> {
    const [column, value] = pendingLoginLookup(by);
    const r = await this.one(`SELECT * FROM pending_logins WHERE ${column} = $1`, [value]);
    return r ? toPendingLogin(r) : undefined;
  }

  async advancePendingLogin(id: string, from: PendingLoginStatus, to: PendingLoginStatus, result: { identityId?: string; error?: string; confirmHash?: string } = {}): Promise<boolean> {
    return await this.changes(`UPDATE pending_logins SET status = $1, identity_id = coalesce($2, identity_id), error = coalesce($3, error), confirm_hash = coalesce($4, confirm_hash)
      WHERE id = $5 AND status = $6`, [to, result.identityId ?? null, result.error ?? null, result.confirmHash ?? null, id, from]) > 0;
  }

  async confirmPendingLogin(id: string, confirmHash: string, at: number): Promise<boolean> {
    return await this.changes(`UPDATE pending_logins SET confirmed_at = $1 WHERE id = $2 AND status = 'signed-in' AND confirm_hash = $3 AND confirmed_at IS NULL`,
      [at, id, confirmHash]) > 0;
  }

  async countPendingLoginFailure(id: string): Promise<number> {
    const r = await this.one('UPDATE pending_logins SET code_failures = code_failures + 1 WHERE id = $1 RETURNING code_failures', [id]);
    return Number(r?.code_failures ?? 0);
  }

  async deletePendingLogins(before: number): Promise<number> {
    return this.changes('DELETE FROM pending_logins WHERE expires_at < $1', [before]);
  }

  async linkExternalIdentity(externalKey: string, identityId: string, at: number): Promise<void> {
    await this.pool.query('INSERT INTO external_identities (external_key, identity_id, created_at) VALUES ($1, $2, $3)', [externalKey, identityId, at]);
  }

  async getIdentityByExternalKey(externalKey: string): Promise<Identity | undefined> {
    const r = await this.one('SELECT i.* FROM identities i JOIN external_identities e ON e.identity_id = i.id WHERE e.external_key = $1', [externalKey]);
    return r ? toIdentity(r) : undefined;
  }

  async updateIdentityAttributes(identityId: string, claims: IdentityClaims, externalGroups: string[]): Promise<void> {
    await this.pool.query('UPDATE identities SET claims = $1, workload_groups = $2 WHERE id = $3', [JSON.stringify(claims), JSON.stringify(externalGroups), identityId]);
  }

  async recordExchangedToken(tokenKey: string, expiresAt: number, now: number): Promise<boolean> {
    // A concurrent insert of the same key waits for the first and then sees its row, which has
    // not expired: the update's WHERE fails and no row is counted, so exactly one caller wins.
    return (await this.changes(`INSERT INTO exchanged_oidc_tokens (token_key, expires_at, exchanged_at) VALUES ($1, $2, $3)
      ON CONFLICT (token_key) DO UPDATE SET expires_at = excluded.expires_at, exchanged_at = excluded.exchanged_at
      WHERE exchanged_oidc_tokens.expires_at < $3`, [tokenKey, expiresAt, now])) === 1;
  }

  async deleteExchangedTokens(before: number): Promise<number> {
    return this.changes('DELETE FROM exchanged_oidc_tokens WHERE expires_at < $1', [before]);
  }

  async addPolicyVersion(p: Omit<PolicyVersion, 'version'>): Promise<PolicyVersion> {
    // Two gateways applying at once: the primary key refuses the second number; take the next.
    for (let attempt = 0; ; attempt++) {
      try {
        const r = await this.one(`INSERT INTO policy_versions (version, hash, document, source, applied_by, applied_at)
          SELECT coalesce(max(version), 0) + 1, $1, $2, $3, $4, $5 FROM policy_versions RETURNING version`, [p.hash, p.document, p.source, p.appliedBy, p.appliedAt]);
        return { ...p, version: Number(r!.version) };
      } catch (err) {
        if ((err as { code?: string }).code !== '23505' || attempt >= 5) throw err;
      }
    }
  }

  async getPolicyVersion(version?: number): Promise<PolicyVersion | undefined> {
    const r = version === undefined
      ? await this.one('SELECT * FROM policy_versions ORDER BY version DESC LIMIT 1')
      : await this.one('SELECT * FROM policy_versions WHERE version = $1', [version]);
    return r ? toPolicyVersion(r) : undefined;
  }

  async listPolicyVersions(): Promise<PolicyVersionInfo[]> {
    return (await this.rows('SELECT version, hash, applied_by, applied_at FROM policy_versions ORDER BY version DESC')).map(toPolicyVersionInfo);
  }

  async appendAuditEntry(e: AuditEntryRow): Promise<void> {
    await this.pool.query('INSERT INTO audit_log (gateway_id, seq, ts, type, data, hash, key_id, signature) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)',
      [e.gatewayId, e.seq, e.ts, e.type, e.data, e.hash, e.keyId, e.signature]);
  }

  async lastAuditEntry(gatewayId: string): Promise<AuditEntryRow | undefined> {
    const r = await this.one('SELECT * FROM audit_log WHERE gateway_id = $1 ORDER BY seq DESC LIMIT 1', [gatewayId]);
    return r ? toAuditEntry(r) : undefined;
  }

  async listAuditEntries(sinceUs: number, limit: number): Promise<AuditEntryRow[]> {
    return (await this.rows('SELECT * FROM (SELECT * FROM audit_log WHERE ts >= $1 ORDER BY ts DESC, seq DESC LIMIT $2) AS newest ORDER BY ts, seq', [sinceUs, limit])).map(toAuditEntry);
  }

  async allAuditEntries(): Promise<AuditEntryRow[]> {
    return (await this.rows('SELECT * FROM audit_log ORDER BY gateway_id, seq')).map(toAuditEntry);
  }

  async createApproval(a: ApprovalRow): Promise<void> {
    await this.pool.query(`INSERT INTO approvals (${APPROVAL_COLUMNS.join(', ')}) VALUES (${APPROVAL_COLUMNS.map((_, i) => `$${i + 1}`).join(', ')})`, approvalValues(a));
  }

  async getApproval(id: string): Promise<ApprovalRow | undefined> {
    const r = await this.one('SELECT * FROM approvals WHERE id = $1', [id]);
    return r ? toApproval(r) : undefined;
  }

  async listApprovals(f: { status?: ApprovalStatus; limit?: number }): Promise<ApprovalRow[]> {
    const rows = f.status
      ? await this.rows('SELECT * FROM approvals WHERE status = $1 ORDER BY created_at DESC LIMIT $2', [f.status, f.limit ?? 1000])
      : await this.rows('SELECT * FROM approvals ORDER BY created_at DESC LIMIT $1', [f.limit ?? 1000]);
    return rows.map(toApproval);
  }

  async updateApproval(id: string, expected: ApprovalStatus, next: Pick<ApprovalRow, 'status' | 'decisions' | 'reason' | 'decidedAt'>): Promise<boolean> {
    return (await this.changes('UPDATE approvals SET status = $1, decisions = $2, reason = $3, decided_at = $4 WHERE id = $5 AND status = $6',
      [next.status, next.decisions, next.reason, next.decidedAt, id, expected])) === 1;
  }

  async close(): Promise<void> {
    await this.pool.end();
  }
}

// ---- the batch statement ---------------------------------------------------------------------
//
// Data-modifying CTEs all run against the snapshot taken when the statement starts, so the UPDATE
// that ends sessions cannot see sessions inserted by the same statement: a session that starts and
// ends within one batch is inserted already ended instead (see writeBatchValues).

//
// Ownership: the sessions the batch writes to are locked (FOR SHARE) and their owners read first.
// A takeover by another gateway (takeOverSessions, FOR UPDATE) either committed before, and then
// the lock returns the new owner, or waits until this batch has committed. When any session is
// owned elsewhere nothing is written, and the statement returns those sessions.
const WRITE_BATCH_SQL = `
WITH held AS (
  SELECT id, gateway_id FROM sessions WHERE id = ANY($43::text[]) FOR SHARE
), lost AS (
  SELECT id, gateway_id FROM held WHERE gateway_id <> $44
), go AS (
  SELECT NOT EXISTS (SELECT 1 FROM lost) AS ok
), started AS (
  INSERT INTO sessions (id, protocol, identity_id, identity_name, identity_kind, client_addr, application_name,
    connection_id, connection_name, target_host, target_port, target_database, target_user, started_at, recording,
    ended_at, end_reason, event_count, identity_claims, auth_method, gateway_id)
  SELECT id, protocol, identity_id, identity_name, identity_kind, client_addr, application_name,
    connection_id, connection_name, target_host, target_port, target_database, target_user, started_at, recording,
    ended_at, end_reason, coalesce(event_count, 0), identity_claims, auth_method, $44::text
  FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[],
    $10::text[], $11::int[], $12::text[], $13::text[], $14::bigint[], $15::text[], $16::bigint[], $17::text[], $18::bigint[],
    $41::text[], $42::text[])
    AS u(id, protocol, identity_id, identity_name, identity_kind, client_addr, application_name,
    connection_id, connection_name, target_host, target_port, target_database, target_user, started_at, recording,
    ended_at, end_reason, event_count, identity_claims, auth_method)
  WHERE (SELECT ok FROM go)
), recorded AS (
  INSERT INTO events (session_id, seq, ts, type, data, hash)
  SELECT * FROM unnest($19::text[], $20::bigint[], $21::bigint[], $22::text[], $23::text[], $24::text[])
  WHERE (SELECT ok FROM go)
), ended AS (
  UPDATE sessions s SET ended_at = u.ended_at, end_reason = u.end_reason, event_count = u.event_count
  FROM unnest($25::text[], $26::bigint[], $27::text[], $28::bigint[]) AS u(id, ended_at, end_reason, event_count)
  WHERE s.id = u.id AND (SELECT ok FROM go)
), signed AS (
  INSERT INTO checkpoints (session_id, seq, payload, key_id, signature)
  SELECT * FROM unnest($29::text[], $30::bigint[], $31::text[], $32::text[], $33::text[])
  WHERE (SELECT ok FROM go)
  ON CONFLICT (session_id, seq) DO UPDATE SET payload = excluded.payload, key_id = excluded.key_id, signature = excluded.signature
), sealed AS (
  INSERT INTO seals (position, session_id, payload, hash, key_id, signature, gateway_id)
  SELECT * FROM unnest($34::bigint[], $35::text[], $36::text[], $37::text[], $38::text[], $39::text[], $40::text[])
  WHERE (SELECT ok FROM go)
)
SELECT id, gateway_id FROM lost`;

function takenOver(rows: Row[]): SessionsTakenOverError {
  return new SessionsTakenOverError(rows.map((r) => ({ sessionId: String(r.id), gatewayId: String(r.gateway_id) })));
}

/** After a write that skipped conflicting rows: the first stored row that is not this batch's, if any. */
async function firstMismatch(c: pg.PoolClient, batch: RecordBatch): Promise<string | null> {
  const events = await c.query('SELECT session_id, seq, ts, type, data, hash FROM events WHERE (session_id, seq) IN (SELECT * FROM unnest($1::text[], $2::bigint[]))',
    [batch.events.map((e) => e.sessionId), batch.events.map((e) => e.seq)]);
  const stored = new Map(events.rows.map((r: Row) => [`${String(r.session_id)}\0${Number(r.seq)}`, r]));
  const seen = new Set<string>();
  for (const e of batch.events) {
    const key = `${e.sessionId}\0${e.seq}`;
    const r = stored.get(key);
    if (seen.has(key) || !r || Number(r.ts) !== e.ts || String(r.type) !== e.type || String(r.data) !== e.data || String(r.hash) !== e.hash) {
      return `event #${e.seq} of session ${e.sessionId}`;
    }
    seen.add(key);
  }
  const seals = await c.query('SELECT gateway_id, position, session_id, hash FROM seals WHERE (gateway_id, position) IN (SELECT * FROM unnest($1::text[], $2::bigint[])) OR session_id = ANY($3::text[])',
    [batch.seals.map((x) => x.gatewayId), batch.seals.map((x) => x.position), batch.seals.map((x) => x.sessionId)]);
  for (const x of batch.seals) {
    const r = seals.rows.find((row: Row) => String(row.session_id) === x.sessionId || (String(row.gateway_id) === x.gatewayId && Number(row.position) === x.position));
    if (!r || String(r.hash) !== x.hash || String(r.session_id) !== x.sessionId || Number(r.position) !== x.position) return `seal at position ${x.position} of gateway ${x.gatewayId}`;
  }
  const sessions = await c.query('SELECT id, started_at, identity_id, connection_id FROM sessions WHERE id = ANY($1::text[])', [batch.sessionsStarted.map((x) => x.id)]);
  for (const x of batch.sessionsStarted) {
    const r = sessions.rows.find((row: Row) => String(row.id) === x.id);
    if (!r || Number(r.started_at) !== x.startedAt || String(r.identity_id) !== x.identityId || String(r.connection_id) !== x.connectionId) return `session ${x.id}`;
  }
  return null;
}

/** The same write, skipping sessions, events and seals already stored (they are compared after). */
const WRITE_BATCH_SKIPPING_STORED_SQL = WRITE_BATCH_SQL.replace(/\n\)(, recorded AS|, ended AS|\nSELECT id, gateway_id FROM lost)/g, '\n  ON CONFLICT DO NOTHING\n)$1');
if (WRITE_BATCH_SKIPPING_STORED_SQL.split('ON CONFLICT DO NOTHING').length !== 4) throw new Error('WRITE_BATCH_SKIPPING_STORED_SQL: expected three inserts to skip stored rows');

function writeBatchValues(batch: RecordBatch): unknown[] {
  const endOf = new Map<string, SessionEnd>();
  for (const e of batch.sessionsEnded) endOf.set(e.sessionId, e);
  const startedHere = new Set<string>();

  const s = columns(18);
  // Session columns added later travel as the last parameters ($41…), so the others keep their numbers.
  const sx = columns(2);
  for (const r of batch.sessionsStarted) {
    const end = endOf.get(r.id);
    startedHere.add(r.id);
    push(s, r.id, r.protocol, r.identityId, r.identityName, r.identityKind, r.clientAddr, r.applicationName, r.connectionId,
      r.connectionName, r.targetHost, r.targetPort, r.targetDatabase, r.targetUser, r.startedAt, r.recordingMode,
      end ? end.endedAt : null, end ? end.endReason : null, end ? end.eventCount : null);
    push(sx, sessionClaimsColumn(r), r.authMethod ?? null);
  }
  const ev = columns(6);
  for (const e of batch.events) push(ev, e.sessionId, e.seq, e.ts, e.type, e.data, e.hash);
  const en = columns(4);
  for (const e of endOf.values()) if (!startedHere.has(e.sessionId)) push(en, e.sessionId, e.endedAt, e.endReason, e.eventCount);
  // As INSERT OR REPLACE in SQLite: the last checkpoint of a (session, seq) wins. ON CONFLICT DO
  // UPDATE may not touch one row twice in a statement, so duplicates are dropped here.
  const lastCheckpoint = new Map<string, CheckpointRow>();
  for (const c of batch.checkpoints) {
    const key = `${c.sessionId}\u0000${c.seq}`;
    lastCheckpoint.delete(key);
    lastCheckpoint.set(key, c);
  }
  const cp = columns(5);
  for (const c of lastCheckpoint.values()) push(cp, c.sessionId, c.seq, c.payload, c.keyId, c.signature);
  const se = columns(7);
  for (const x of batch.seals) push(se, x.position, x.sessionId, x.payload, x.hash, x.keyId, x.signature, x.gatewayId);
  return [...s, ...ev, ...en, ...cp, ...se, ...sx, [...new Set(sessionIdsOf(batch))], batch.gatewayId];
}

function columns(n: number): unknown[][] {
  return Array.from({ length: n }, () => []);
}

function push(cols: unknown[][], ...values: unknown[]): void {
  for (let i = 0; i < cols.length; i++) cols[i].push(values[i]);
}
