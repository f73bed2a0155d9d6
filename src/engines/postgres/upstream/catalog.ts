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

/** A table column by its catalog name (result masking reads columns so, never by their output name). */
export interface ColumnName { schema: string; table: string; column: string }

/**
 * What a type is, for result masking: the columns of the table whose rows it holds (a whole-row
 * value such as `select u from users u`, or an array of them), and whether its values are text
 * (a domain over a text type, or a type of the string category such as citext).
 */
export interface TypeInfo { rowOf: ColumnName[]; textual: boolean }

/**
 * How long a column's name is trusted: a rename on the target shows within this time (a rename
 * by a session this gateway masks clears the cache at once, see forgetColumns).
 */
const COLUMN_TTL_MS = 10_000;

/** A catalog name in a SQL text literal (standard_conforming_strings, PostgreSQL's default). */
const literal = (s: string): string => `'${s.replace(/'/g, "''")}'`;

class Catalog {
  private readonly login: Login;
  private readonly functions = new Map<number, string | null>();
  private readonly types = new Map<number, { info: TypeInfo; at: number }>();
  /** "tableOid.attnum" → name (null: no such column now) and when it was read. */
  private readonly columns = new Map<string, { name: ColumnName | null; at: number }>();
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

  /** The cached name of a column; undefined when it must be looked up. */
  peekColumn(tableOid: number, attnum: number): ColumnName | null | undefined {
    const hit = this.columns.get(`${tableOid}.${attnum}`);
    if (!hit || Date.now() - hit.at > COLUMN_TTL_MS) return undefined;
    return hit.name;
  }

  /** Looks the columns up (table OID, attribute number) and caches their names. */
  async resolveColumns(keys: ReadonlyArray<readonly [number, number]>): Promise<void> {
    const wanted = [...new Map(keys.map(([o, a]) => [`${o >>> 0}.${a | 0}`, [o >>> 0, a | 0] as const])).values()];
    if (wanted.length === 0) return;
    // Numbers from the message decoder: safe to place in the text.
    const rows = await this.run(`select a.attrelid, a.attnum, n.nspname, c.relname, a.attname from pg_catalog.pg_attribute a
      join pg_catalog.pg_class c on c.oid = a.attrelid join pg_catalog.pg_namespace n on n.oid = c.relnamespace
      where not a.attisdropped and (a.attrelid, a.attnum) in (${wanted.map(([o, a]) => `(${o}::oid, ${a}::int2)`).join(', ')})`);
    const at = Date.now();
    if (this.columns.size + wanted.length > MAX_CACHED) this.columns.clear();
    for (const [o, a] of wanted) this.columns.set(`${o}.${a}`, { name: null, at });
    for (const r of rows) this.columns.set(`${r[0]}.${r[1]}`, { name: { schema: r[2] ?? '', table: r[3] ?? '', column: r[4] ?? '' }, at });
  }

  /** The columns of a relation named in a COPY, in order (or those listed); null when it cannot be found. */
  async relationColumns(schema: string | null, relation: string, only: readonly string[] | null): Promise<ColumnName[] | null> {
    const reg = schema === null ? `pg_catalog.quote_ident(${literal(relation)})` : `pg_catalog.quote_ident(${literal(schema)}) || '.' || pg_catalog.quote_ident(${literal(relation)})`;
    const rows = await this.run(`select n.nspname, c.relname, a.attname from pg_catalog.pg_attribute a
      join pg_catalog.pg_class c on c.oid = a.attrelid join pg_catalog.pg_namespace n on n.oid = c.relnamespace
      where a.attrelid = pg_catalog.to_regclass(${reg}) and a.attnum > 0 and not a.attisdropped order by a.attnum`);
    if (rows.length === 0) return null;
    const all = rows.map((r) => ({ schema: r[0] ?? '', table: r[1] ?? '', column: r[2] ?? '' }));
    if (!only) return all;
    return only.map((name) => all.find((c) => c.column === name) ?? { schema: all[0]!.schema, table: all[0]!.table, column: name });
  }

  forgetColumns(): void {
    this.columns.clear();
    this.types.clear();
  }

  peekType(typeOid: number): TypeInfo | undefined {
    const hit = this.types.get(typeOid);
    if (!hit || Date.now() - hit.at > COLUMN_TTL_MS) return undefined;
    return hit.info;
  }

  async resolveTypes(oids: readonly number[]): Promise<void> {
    const wanted = [...new Set(oids.map((o) => o >>> 0))];
    if (wanted.length === 0) return;
    const list = wanted.join(', ');
    // A row type (or an array of one) names its table's columns; a domain is what its base type is.
    const rows = await this.run(`select t.oid, n.nspname, c.relname, a.attname,
        (b.typcategory = 'S' or t.typcategory = 'S')::text
      from pg_catalog.pg_type t
      left join pg_catalog.pg_type e on e.oid = t.typelem and t.typcategory = 'A'
      left join pg_catalog.pg_type b on b.oid = t.typbasetype
      left join pg_catalog.pg_class c on c.oid = coalesce(nullif(t.typrelid, 0), e.typrelid)
      left join pg_catalog.pg_namespace n on n.oid = c.relnamespace
      left join pg_catalog.pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
      where t.oid in (${list})`);
    const at = Date.now();
    if (this.types.size + wanted.length > MAX_CACHED) this.types.clear();
    for (const o of wanted) this.types.set(o, { info: { rowOf: [], textual: false }, at });
    for (const r of rows) {
      const info = this.types.get(Number(r[0]))!.info;
      if (r[4] === 'true') info.textual = true;
      if (r[3] !== null && r[3] !== undefined) info.rowOf.push({ schema: r[1] ?? '', table: r[2] ?? '', column: r[3] });
    }
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

  private catalogOf(connectionId: string, login: Login): Catalog {
    let catalog = this.catalogs.get(connectionId);
    if (!catalog) { catalog = new Catalog(login); this.catalogs.set(connectionId, catalog); }
    return catalog;
  }

  /** The cached catalog name of a result column; undefined: not known yet (see resolveColumns). */
  peekColumn(connectionId: string, login: Login, tableOid: number, attnum: number): ColumnName | null | undefined {
    return this.catalogOf(connectionId, login).peekColumn(tableOid, attnum);
  }

  /** Looks result columns up by table OID and attribute number; rejects when the catalog cannot be read. */
  resolveColumns(connectionId: string, login: Login, keys: ReadonlyArray<readonly [number, number]>): Promise<void> {
    return this.catalogOf(connectionId, login).resolveColumns(keys);
  }

  /** The columns of the relation a COPY names; null when it cannot be found; rejects when the catalog cannot be read. */
  relationColumns(connectionId: string, login: Login, schema: string | null, relation: string, only: readonly string[] | null): Promise<ColumnName[] | null> {
    return this.catalogOf(connectionId, login).relationColumns(schema, relation, only);
  }

  peekType(connectionId: string, login: Login, typeOid: number): TypeInfo | undefined {
    return this.catalogOf(connectionId, login).peekType(typeOid);
  }

  resolveTypes(connectionId: string, login: Login, oids: readonly number[]): Promise<void> {
    return this.catalogOf(connectionId, login).resolveTypes(oids);
  }

  /** A session ran DDL: column names may have changed. */
  forgetColumns(connectionId: string): void {
    this.catalogs.get(connectionId)?.forgetColumns();
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
