// Reads the target's catalog on a connection of the gateway's own (never a client's session),
// for what the wire protocol names only by OID — e.g. the function a fast-path FunctionCall
// runs. One lazily opened connection per registered connection, answers cached, queries in turn.
import type { Logger } from 'pino';
import type { UpstreamConnection } from './login.ts';
import { simpleQuery } from './simple-query.ts';

const QUERY_TIMEOUT_MS = 5_000;
/** An unused catalog connection is closed after this long. */
const IDLE_MS = 60_000;
const MAX_CACHED = 10_000;

type Login = () => Promise<UpstreamConnection>;

class Catalog {
  private readonly login: Login;
  private readonly functions = new Map<number, string | null>();
  private conn: Promise<UpstreamConnection> | null = null;
  private turn: Promise<unknown> = Promise.resolve();
  private idle: NodeJS.Timeout | null = null;

  constructor(login: Login) {
    this.login = login;
  }

  functionName(oid: number): Promise<string | null> {
    const known = this.functions.get(oid);
    if (known !== undefined) return Promise.resolve(known);
    // The OID is a number from the message decoder: safe to place in the text.
    const sql = `select n.nspname || '.' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')'
      from pg_catalog.pg_proc p join pg_catalog.pg_namespace n on n.oid = p.pronamespace where p.oid = ${oid >>> 0}`;
    return this.run(sql).then((rows) => {
      const name = rows[0]?.[0] ?? null;
      if (this.functions.size >= MAX_CACHED) this.functions.clear();
      this.functions.set(oid, name);
      return name;
    });
  }

  private run(sql: string): Promise<Array<Array<string | null>>> {
    const next = this.turn.then(async () => {
      this.conn ??= this.login();
      let conn: UpstreamConnection;
      try {
        conn = await this.conn;
      } catch (err) {
        this.conn = null;
        throw err;
      }
      try {
        return await simpleQuery(conn, sql, QUERY_TIMEOUT_MS);
      } catch (err) {
        conn.stream.destroy();
        this.conn = null;
        throw err;
      } finally {
        this.touch();
      }
    });
    this.turn = next.catch(() => undefined);
    return next;
  }

  private touch(): void {
    if (this.idle) clearTimeout(this.idle);
    this.idle = setTimeout(() => this.close(), IDLE_MS).unref();
  }

  close(): void {
    if (this.idle) clearTimeout(this.idle);
    this.idle = null;
    const conn = this.conn;
    this.conn = null;
    conn?.then((c) => c.stream.destroy(), () => undefined);
  }
}

export class CatalogLookups {
  private readonly catalogs = new Map<string, Catalog>();
  private readonly log: Logger;

  constructor(log: Logger) {
    this.log = log;
  }

  /** The function's qualified signature, or null when it cannot be told (the call is recorded by OID). */
  functionName(connectionId: string, login: Login, oid: number): Promise<string | null> {
    let catalog = this.catalogs.get(connectionId);
    if (!catalog) { catalog = new Catalog(login); this.catalogs.set(connectionId, catalog); }
    return catalog.functionName(oid).catch((err: unknown) => {
      this.log.warn({ err: (err as Error).message }, 'catalog lookup failed');
      return null;
    });
  }

  /** The connection changed or was removed: its answers may no longer hold. */
  drain(connectionId: string): void {
    this.catalogs.get(connectionId)?.close();
    this.catalogs.delete(connectionId);
  }

  close(): void {
    for (const c of this.catalogs.values()) c.close();
    this.catalogs.clear();
  }
}
