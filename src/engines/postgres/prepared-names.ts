// SQL statements that create or drop prepared statements by name (PREPARE, DEALLOCATE,
// DISCARD ALL) share one namespace with the protocol's Parse/Close, and SQL cursors (DECLARE,
// CLOSE) share one with the protocol's portals: a protocol Execute of a DECLAREd cursor's name
// fetches it. When the server reports such a command complete, the tracker must learn which name
// changed, so a later protocol Bind or Execute of that name is recorded with the text the server
// really holds. The statement is read with the real PostgreSQL parser (libpg-query), and only
// when such a command tag arrives: never per message. A DO block or a procedure (CALL) may run
// PREPARE or DECLARE inside, out of sight: after one, names it may have touched are unverified.
import { loadModule, parseSync } from 'libpg-query';
import { someStatementStartsWith, type SqlChars } from './sql-statement-starts.ts';
import { includesCaseless } from './sql-bytes.ts';

let loaded: Promise<void> | null = null;
let ready = false;

/** Loads the parser (WebAssembly) once; engines call it at start so lookups are synchronous. */
export function loadSqlParser(): Promise<void> {
  loaded ??= loadModule().then(() => { ready = true; });
  return loaded;
}

export type NameEffect =
  | { kind: 'prepare'; name: string; text: string }
  | { kind: 'deallocate'; name: string }
  | { kind: 'deallocate-all' }
  | { kind: 'discard-all' }
  | { kind: 'declare-cursor'; name: string; text: string; holdable: boolean; binary: boolean }
  | { kind: 'close-cursor'; name: string }
  | { kind: 'close-all-cursors' }
  /** A DO block or procedure ran: any name may have been redefined inside it. */
  | { kind: 'routine'; tag: string };

const NAME_TAGS = new Set(['PREPARE', 'DEALLOCATE', 'DEALLOCATE ALL', 'DISCARD ALL', 'DECLARE CURSOR', 'CLOSE CURSOR', 'CLOSE CURSOR ALL', 'DO', 'CALL']);

/** Command tags that may change prepared-statement or portal names. */
export function tagChangesNames(tag: string): boolean {
  return NAME_TAGS.has(tag);
}

// DeclareCursorStmt.options bits (PostgreSQL's parsenodes.h).
const CURSOR_OPT_BINARY = 0x1;
const CURSOR_OPT_HOLD = 0x20;

/**
 * The effect of the `index`-th statement of `sql` (the one the server just completed with `tag`),
 * or null when it cannot be determined (the caller must then assume any name may have changed).
 */
export function nameEffect(sql: string, index: number, tag: string): NameEffect | null {
  if (tag === 'DISCARD ALL') return { kind: 'discard-all' };
  if (tag === 'DEALLOCATE ALL') return { kind: 'deallocate-all' };
  if (tag === 'CLOSE CURSOR ALL') return { kind: 'close-all-cursors' };
  if (tag === 'DO' || tag === 'CALL') return { kind: 'routine', tag };
  if (!ready) return null;
  let stmts: Array<{ stmt?: Record<string, unknown>; stmt_location?: number; stmt_len?: number }>;
  try {
    stmts = (parseSync(sql) as { stmts?: typeof stmts }).stmts ?? [];
  } catch {
    return null;
  }
  const entry = stmts[index];
  if (!entry?.stmt) return null;
  const node = entry.stmt as {
    PrepareStmt?: { name?: string }; DeallocateStmt?: { name?: string; isall?: boolean };
    DeclareCursorStmt?: { portalname?: string; options?: number }; ClosePortalStmt?: { portalname?: string };
  };
  // Locations are byte offsets into the UTF-8 text the parser was given.
  const statementText = (): string => {
    const bytes = Buffer.from(sql, 'utf8');
    const from = entry.stmt_location ?? 0;
    const to = entry.stmt_len ? from + entry.stmt_len : bytes.length;
    return bytes.toString('utf8', from, to).trim();
  };
  if (tag === 'PREPARE' && node.PrepareStmt?.name !== undefined) return { kind: 'prepare', name: node.PrepareStmt.name, text: statementText() };
  if (tag === 'DECLARE CURSOR' && node.DeclareCursorStmt?.portalname !== undefined) {
    const options = node.DeclareCursorStmt.options ?? 0;
    return {
      kind: 'declare-cursor', name: node.DeclareCursorStmt.portalname, text: statementText(),
      holdable: (options & CURSOR_OPT_HOLD) !== 0, binary: (options & CURSOR_OPT_BINARY) !== 0,
    };
  }
  if (tag === 'CLOSE CURSOR' && node.ClosePortalStmt?.portalname !== undefined) return { kind: 'close-cursor', name: node.ClosePortalStmt.portalname };
  if (tag === 'DEALLOCATE' && node.DeallocateStmt) {
    if (node.DeallocateStmt.isall) return { kind: 'deallocate-all' };
    if (node.DeallocateStmt.name !== undefined) return { kind: 'deallocate', name: node.DeallocateStmt.name };
  }
  return null;
}

/** Statements that may create or drop statement or portal names when they run. */
const NAME_CHANGING = new Set(['PREPARE', 'DEALLOCATE', 'DISCARD', 'DECLARE', 'CLOSE', 'DO', 'CALL', 'EXECUTE']);

/**
 * Conservative test: could running this text change prepared-statement or portal names? Only
 * statements that begin with such a command count (a table named prepared_orders does not), so
 * pipelines of ordinary statements are not held for each other's answers.
 */
export function mayChangeNames(sql: SqlChars): boolean {
  return someStatementStartsWith(sql, NAME_CHANGING);
}

const ENCODING_CHANGING = new Set(['SET', 'RESET', 'DISCARD', 'DO', 'CALL', 'EXECUTE']);

/**
 * Conservative test: could running this text change client_encoding (SET NAMES, SET/RESET
 * client_encoding, RESET ALL, DISCARD ALL, set_config(), or a routine)? Text behind it that is not
 * plain ASCII is decoded only once its answer shows the encoding.
 */
export function mayChangeEncoding(sql: SqlChars): boolean {
  return someStatementStartsWith(sql, ENCODING_CHANGING) || (typeof sql === 'string' ? /set_config/i.test(sql) : includesCaseless(sql, 'set_config'));
}
