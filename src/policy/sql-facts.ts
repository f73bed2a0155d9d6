// What a SQL message does, read with the real PostgreSQL parser (libpg-query), so that comments,
// case, quoting, whitespace, dollar quoting and multi-statement messages cannot hide a command from
// a rule. Every statement the message would run counts, including statements nested in others: a
// DELETE in a WITH clause, the query of PREPARE, EXPLAIN or CREATE TABLE AS. Results are cached by
// text (a driver repeats the same statements), bounded.
import { loadModule, parseSync } from 'libpg-query';

export interface SqlStatementFacts {
  /**
   * Command names, most general first: the command tag PostgreSQL reports ("DROP TABLE",
   * "DELETE", "SET"), then refinements rules may name ("SET ROLE", "COPY TO PROGRAM"); the last
   * is the most specific.
   */
  commands: string[];
  /** DELETE or UPDATE without a WHERE clause, or with one that reads no column (WHERE true, WHERE 1=1). */
  withoutWhere: boolean;
  /** Functions called anywhere in the statement: "name" and, when qualified, "schema.name" (lower case). */
  functions: string[];
  /** Relations named anywhere in the statement: "name" and, when qualified, "schema.name". */
  tables: string[];
  /** Code the gateway cannot see into: DO blocks, function and procedure bodies. */
  procedural: boolean;
  /** Nested inside another statement (a data-modifying WITH, PREPARE's query…). */
  nested: boolean;
}

export type SqlFacts = { ok: true; statements: SqlStatementFacts[] } | { ok: false; error: string };

let loaded: Promise<void> | null = null;
let ready = false;

/** Loads the parser (WebAssembly) once; call at start so that decisions are synchronous. */
export function loadPolicyParser(): Promise<void> {
  loaded ??= loadModule().then(() => { ready = true; });
  return loaded;
}

const CACHE_LIMIT = 5000;
const MAX_CACHED_TEXT = 16 * 1024;
const cache = new Map<string, SqlFacts>();

/** The facts of every statement `text` would run; `ok: false` when it cannot be parsed. */
export function sqlFacts(text: string): SqlFacts {
  const hit = cache.get(text);
  if (hit) return hit;
  const facts = readFacts(text);
  if (text.length <= MAX_CACHED_TEXT) {
    if (cache.size >= CACHE_LIMIT) cache.delete(cache.keys().next().value!);
    cache.set(text, facts);
  }
  return facts;
}

type Node = Record<string, unknown>;

function readFacts(text: string): SqlFacts {
  if (!ready) return { ok: false, error: 'the SQL parser is not loaded' };
  let stmts: Array<{ stmt?: Node }>;
  try {
    stmts = (parseSync(text) as { stmts?: Array<{ stmt?: Node }> }).stmts ?? [];
  } catch (err) {
    return { ok: false, error: (err as Error).message };
  }
  const statements: SqlStatementFacts[] = [];
  for (const s of stmts) if (s.stmt) collect(s.stmt, false, statements);
  return { ok: true, statements };
}

/** Adds the statement wrapped in `wrapper` ({DeleteStmt: {...}}) and every statement nested in it. */
function collect(wrapper: Node, nested: boolean, out: SqlStatementFacts[]): void {
  const [key, node] = Object.entries(wrapper)[0] as [string, Node];
  const facts: SqlStatementFacts = { commands: commandNames(key, node), withoutWhere: false, functions: [], tables: [], procedural: false, nested };
  if (key === 'DeleteStmt' || key === 'UpdateStmt') facts.withoutWhere = !node.whereClause || !readsAColumn(node.whereClause);
  if (key === 'DoStmt' || key === 'CreateFunctionStmt') facts.procedural = true;
  out.push(facts);
  const functions = new Set<string>();
  const tables = new Set<string>();
  walk(node, (k, v) => {
    if (k === 'FuncCall') addName(functions, (v.funcname as Node[] | undefined) ?? []);
    else if (STATEMENTS_THAT_RUN.has(k)) {
      collect({ [k]: v }, true, out);
      return false; // its own facts hold what is inside it
    }
    return true;
  });
  addBoundFunctions(key, node, functions);
  addRelations(node, tables);
  // DROP TABLE / VIEW / … name their objects as lists of identifiers, not as relations.
  if (key === 'DropStmt') for (const o of (node.objects as Node[] | undefined) ?? []) addName(tables, (((o.List as Node | undefined)?.items) as Node[] | undefined) ?? [], false);
  facts.functions = [...functions];
  facts.tables = [...tables];
}

/**
 * Every relation the statement names: RangeVar nodes, wherever they sit (a DELETE's target is a
 * bare RangeVar under `relation`, a FROM list wraps them) — but not inside nested statements,
 * which have their own facts.
 */
function addRelations(node: unknown, into: Set<string>): void {
  if (Array.isArray(node)) {
    for (const x of node) addRelations(x, into);
    return;
  }
  if (node === null || typeof node !== 'object') return;
  const n = node as Node;
  if (typeof n.relname === 'string') {
    into.add(n.relname);
    if (typeof n.schemaname === 'string' && n.schemaname) into.add(`${n.schemaname}.${n.relname}`);
  }
  for (const [k, v] of Object.entries(n)) if (!STATEMENTS_THAT_RUN.has(k)) addRelations(v, into);
}

/**
 * Functions a statement names without a call: CALL's procedure, and the functions that CREATE
 * OPERATOR / AGGREGATE / TYPE / CAST / TRIGGER / CONVERSION / TRANSFORM bind to syntax that calls
 * them later without naming them (`CREATE OPERATOR ### (FUNCTION = pg_terminate_backend …)`, then
 * `SELECT ### pid`).
 */
function addBoundFunctions(key: string, n: Node, into: Set<string>): void {
  const names = (v: unknown): Node[] => (Array.isArray(v) ? (v as Node[]) : []);
  switch (key) {
    case 'CallStmt': addName(into, names((n.funccall as Node | undefined)?.funcname)); break;
    case 'CreateCastStmt': addName(into, names((n.func as Node | undefined)?.objname)); break;
    case 'CreateTrigStmt': case 'CreateEventTrigStmt': addName(into, names(n.funcname)); break;
    case 'CreateConversionStmt': addName(into, names(n.func_name)); break;
    case 'CreateTransformStmt': for (const f of [n.fromsql, n.tosql]) addName(into, names((f as Node | undefined)?.objname)); break;
    case 'DefineStmt': case 'AlterOperatorStmt': case 'AlterTypeStmt':
      // Definitions name functions as type names (FUNCTION = f, SFUNC = f, INPUT = f, RESTRICT = f…).
      for (const d of names(n.definition ?? n.options)) {
        const arg = (d.DefElem as Node | undefined)?.arg as Node | undefined;
        addName(into, names((arg?.TypeName as Node | undefined)?.names));
      }
      break;
    default: break;
  }
}

/** Nested statements that execute (as opposed to SelectStmt, read by the statement around it). */
const STATEMENTS_THAT_RUN = new Set(['DeleteStmt', 'UpdateStmt', 'InsertStmt', 'MergeStmt']);

function addName(into: Set<string>, parts: Node[], lower = true): void {
  const names = parts.map((p) => String((p.String as Node | undefined)?.sval ?? '')).map((x) => (lower ? x.toLowerCase() : x));
  if (names.length === 0) return;
  into.add(names[names.length - 1]!);
  if (names.length > 1) into.add(names.join('.'));
}

/** Depth-first over every object in the tree; `visit` returns false to skip a node's children. */
function walk(node: unknown, visit: (key: string, value: Node) => boolean): void {
  if (Array.isArray(node)) {
    for (const x of node) walk(x, visit);
    return;
  }
  if (node === null || typeof node !== 'object') return;
  for (const [k, v] of Object.entries(node as Node)) {
    if (v !== null && typeof v === 'object' && !Array.isArray(v) && /^[A-Z]/.test(k)) {
      if (visit(k, v as Node)) walk(v, visit);
    } else {
      walk(v, visit);
    }
  }
}

function readsAColumn(where: unknown): boolean {
  let found = false;
  walk(where, (k) => {
    if (k === 'ColumnRef' || k === 'SubLink') found = true;
    return !found;
  });
  return found;
}

/** "AlterSystemStmt" → "ALTER SYSTEM": PostgreSQL's own tag for most statements. */
function fromNodeName(key: string): string {
  return key.replace(/Stmt$/, '').replace(/([a-z])([A-Z])/g, '$1 $2').toUpperCase();
}

/** OBJECT_MATVIEW → "MATERIALIZED VIEW". */
function objectWord(objtype: unknown): string {
  const t = String(objtype ?? '').replace(/^OBJECT_/, '');
  const special: Record<string, string> = { MATVIEW: 'MATERIALIZED VIEW', FDW: 'FOREIGN DATA WRAPPER', TSCONFIGURATION: 'TEXT SEARCH CONFIGURATION', TSDICTIONARY: 'TEXT SEARCH DICTIONARY' };
  return special[t] ?? t.replace(/_/g, ' ');
}

const TRANSACTION_TAGS: Record<string, string> = {
  TRANS_STMT_BEGIN: 'BEGIN', TRANS_STMT_START: 'START TRANSACTION', TRANS_STMT_COMMIT: 'COMMIT', TRANS_STMT_ROLLBACK: 'ROLLBACK',
  TRANS_STMT_SAVEPOINT: 'SAVEPOINT', TRANS_STMT_RELEASE: 'RELEASE', TRANS_STMT_ROLLBACK_TO: 'ROLLBACK', TRANS_STMT_PREPARE: 'PREPARE TRANSACTION',
  TRANS_STMT_COMMIT_PREPARED: 'COMMIT PREPARED', TRANS_STMT_ROLLBACK_PREPARED: 'ROLLBACK PREPARED',
};

function commandNames(key: string, n: Node): string[] {
  switch (key) {
    case 'SelectStmt': return n.intoClause ? ['SELECT', 'SELECT INTO'] : ['SELECT'];
    case 'InsertStmt': return ['INSERT'];
    case 'UpdateStmt': return ['UPDATE'];
    case 'DeleteStmt': return ['DELETE'];
    case 'MergeStmt': return ['MERGE'];
    case 'DropStmt': return [`DROP ${objectWord(n.removeType)}`];
    case 'TruncateStmt': return ['TRUNCATE', 'TRUNCATE TABLE'];
    case 'CreateStmt': return ['CREATE TABLE'];
    case 'CreateTableAsStmt': return n.is_select_into ? ['SELECT', 'SELECT INTO'] : [`CREATE ${objectWord(n.objtype)}`, `CREATE ${objectWord(n.objtype)} AS`];
    case 'AlterTableStmt': return [`ALTER ${objectWord(n.objtype)}`];
    case 'RenameStmt': return [`ALTER ${objectWord(n.renameType)}`];
    case 'IndexStmt': return ['CREATE INDEX'];
    case 'ViewStmt': return ['CREATE VIEW'];
    case 'CreateSeqStmt': return ['CREATE SEQUENCE'];
    case 'CreateTrigStmt': return ['CREATE TRIGGER'];
    case 'RuleStmt': return ['CREATE RULE'];
    case 'CreatedbStmt': return ['CREATE DATABASE'];
    case 'DropdbStmt': return ['DROP DATABASE'];
    case 'CreateFunctionStmt': return [n.is_procedure ? 'CREATE PROCEDURE' : 'CREATE FUNCTION'];
    case 'GrantStmt': return [n.is_grant ? 'GRANT' : 'REVOKE'];
    case 'GrantRoleStmt': return n.is_grant ? ['GRANT', 'GRANT ROLE'] : ['REVOKE', 'REVOKE ROLE'];
    case 'TransactionStmt': return [TRANSACTION_TAGS[String(n.kind)] ?? 'TRANSACTION'];
    case 'VacuumStmt': return [n.is_vacuumcmd ? 'VACUUM' : 'ANALYZE'];
    case 'VariableShowStmt': return ['SHOW'];
    case 'LockStmt': return ['LOCK TABLE'];
    case 'CopyStmt': {
      const dir = n.is_from ? 'COPY FROM' : 'COPY TO';
      return n.is_program ? ['COPY', dir, `${dir} PROGRAM`] : n.filename ? ['COPY', dir, `${dir} FILE`] : ['COPY', dir];
    }
    case 'VariableSetStmt': {
      const tag = n.kind === 'VAR_RESET' || n.kind === 'VAR_RESET_ALL' ? 'RESET' : 'SET';
      const name = String(n.name ?? '');
      const what: Record<string, string> = { role: 'ROLE', session_authorization: 'SESSION AUTHORIZATION', search_path: 'SEARCH_PATH' };
      return what[name] ? [tag, `${tag} ${what[name]}`] : [tag];
    }
    case 'DiscardStmt': return ['DISCARD', `DISCARD ${String(n.target ?? '').replace(/^DISCARD_/, '')}`];
    case 'DeallocateStmt': return n.name ? ['DEALLOCATE'] : ['DEALLOCATE', 'DEALLOCATE ALL'];
    case 'ClosePortalStmt': return n.portalname ? ['CLOSE CURSOR'] : ['CLOSE CURSOR', 'CLOSE CURSOR ALL'];
    case 'DeclareCursorStmt': return ['DECLARE CURSOR'];
    case 'AlterRoleStmt': return ['ALTER ROLE'];
    case 'CreateRoleStmt': return ['CREATE ROLE', `CREATE ${String(n.stmt_type ?? 'ROLE_STMT_ROLE').replace(/^ROLE_STMT_/, '')}`];
    case 'DropRoleStmt': return ['DROP ROLE'];
    case 'CallStmt': return ['CALL'];
    // CREATE OPERATOR, CREATE AGGREGATE, CREATE TYPE, … (PostgreSQL's tags), not "DEFINE".
    case 'DefineStmt': return [`CREATE ${objectWord(n.kind)}`];
    case 'DoStmt': return ['DO'];
    default: return [fromNodeName(key)];
  }
}
