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
export interface ColumnName {
  schema: string;
  table: string;
  column: string;
  /** A view's column that shows a table's column as it is (select email from users): that column. */
  origin?: ColumnName;
}

/** Views on views are followed this deep. */
const MAX_VIEW_DEPTH = 4;

/**
 * Which table column each output column of a view shows, from its stored definition (the
 * _RETURN rule's query tree, as pg_node_tree text): the outer query's target entries carry
 * resorigtbl/resorigcol, which PostgreSQL set when the view was made. Only the outer target list
 * counts (subqueries in the definition have target lists of their own); an expression has none.
 */
export function viewColumnOrigins(tree: string): Map<number, readonly [number, number]> {
  const out = new Map<number, readonly [number, number]>();
  // ({QUERY … :targetList ({TARGETENTRY …} …) …}): find :targetList at the outer QUERY's own depth.
  let depth = 0;
  let list = -1;
  for (let i = 0; i < tree.length; i++) {
    const c = tree[i];
    if (c === '\\') { i++; continue; }
    if (c === '(' || c === '{') depth++;
    else if (c === ')' || c === '}') { depth--; if (depth < 2) break; }
    else if (depth === 2 && c === ':' && tree.startsWith(':targetList ', i)) { list = i + ':targetList '.length; break; }
  }
  if (list < 0 || tree[list] !== '(') return out;
  // Each entry's own fields are at the entry's depth; nested nodes (its expression) are deeper.
  depth = 0;
  let entry = -1;
  let fields = '';
  for (let i = list; i < tree.length; i++) {
    const c = tree[i];
    if (c === '\\') { if (depth === 2) fields += tree.slice(i, i + 2); i++; continue; }
    if (c === '(' || c === '{') {
      depth++;
      if (depth === 2 && c === '{') { entry = i; fields = ''; }
      continue;
    }
    if (c === ')' || c === '}') {
      if (depth === 2 && entry >= 0) {
        const resno = / :resno (\d+)/.exec(fields);
        const tbl = / :resorigtbl (\d+)/.exec(fields);
        const col = / :resorigcol (\d+)/.exec(fields);
        if (/^TARGETENTRY\b/.test(fields) && resno && tbl && col && tbl[1] !== '0' && !/ :resjunk true/.test(fields)) out.set(Number(resno[1]), [Number(tbl[1]), Number(col[1])]);
        entry = -1;
      }
      depth--;
      if (depth === 0) break;
      continue;
    }
    if (depth === 2) fields += c;
  }
  return out;
}

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
  async resolveColumns(keys: ReadonlyArray<readonly [number, number]>, depth = 0): Promise<void> {
    const wanted = [...new Map(keys.map(([o, a]) => [`${o >>> 0}.${a | 0}`, [o >>> 0, a | 0] as const])).values()];
    if (wanted.length === 0) return;
    // Numbers from the message decoder: safe to place in the text. A view's (or materialized
    // view's) definition comes along: its columns are traced to the table columns they show.
    const rows = await this.run(`select a.attrelid, a.attnum, n.nspname, c.relname, a.attname,
        case when c.relkind in ('v', 'm') then (select r.ev_action::text from pg_catalog.pg_rewrite r where r.ev_class = c.oid and r.rulename = '_RETURN') end
      from pg_catalog.pg_attribute a
      join pg_catalog.pg_class c on c.oid = a.attrelid join pg_catalog.pg_namespace n on n.oid = c.relnamespace
      where not a.attisdropped and (a.attrelid, a.attnum) in (${wanted.map(([o, a]) => `(${o}::oid, ${a}::int2)`).join(', ')})`);
    const at = Date.now();
    if (this.columns.size + wanted.length > MAX_CACHED) this.columns.clear();
    for (const [o, a] of wanted) this.columns.set(`${o}.${a}`, { name: null, at });
    const origins: Array<{ name: ColumnName; key: readonly [number, number] }> = [];
    const definitions = new Map<string, Map<number, readonly [number, number]>>();
    for (const r of rows) {
      const name: ColumnName = { schema: r[2] ?? '', table: r[3] ?? '', column: r[4] ?? '' };
      this.columns.set(`${r[0]}.${r[1]}`, { name, at });
      if (r[5] && depth < MAX_VIEW_DEPTH) {
        let origin = definitions.get(r[0]!);
        if (!origin) definitions.set(r[0]!, origin = viewColumnOrigins(r[5]));
        const o = origin.get(Number(r[1]));
        if (o) origins.push({ name, key: o });
      }
    }
    if (origins.length === 0) return;
    const missing = origins.filter((o) => this.peekColumn(o.key[0], o.key[1]) === undefined).map((o) => o.key);
    if (missing.length > 0) await this.resolveColumns(missing, depth + 1);
    for (const o of origins) {
      const base = this.peekColumn(o.key[0], o.key[1]);
      if (base) o.name.origin = base;
    }
  }

  /** The columns of a relation named in a COPY, in order (or those listed); null when it cannot be found. */
  async relationColumns(schema: string | null, relation: string, only: readonly string[] | null): Promise<ColumnName[] | null> {
    // An unqualified name is resolved by the client's session with its own search path, which the
    // gateway does not know (SET search_path = hr; COPY staff …): this connection's path could
    // name another relation of that name (a decoy with harmless column names). So an unqualified
    // name is taken only when one relation in the whole database has it; otherwise: null (every
    // column masked).
    const which = schema === null
      ? `(select pg_catalog.min(c2.oid) from pg_catalog.pg_class c2 where c2.relname = ${literal(relation)} and c2.relkind in ('r', 'p', 'v', 'm', 'f') having pg_catalog.count(*) = 1)`
      : `pg_catalog.to_regclass(pg_catalog.quote_ident(${literal(schema)}) || '.' || pg_catalog.quote_ident(${literal(relation)}))`;
    const rows = await this.run(`select n.nspname, c.relname, a.attname from pg_catalog.pg_attribute a
      join pg_catalog.pg_class c on c.oid = a.attrelid join pg_catalog.pg_namespace n on n.oid = c.relnamespace
      where a.attrelid = ${which} and a.attnum > 0 and not a.attisdropped order by a.attnum`);
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
