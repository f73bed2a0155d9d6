// SQL statements that create or drop prepared statements by name (PREPARE, DEALLOCATE,
// DISCARD ALL) share one namespace with the protocol's Parse/Close. When the server reports such
// a command complete, the tracker must learn which name changed, so a later protocol Bind of that
// name is recorded with the text the server really holds. The statement is read with the real
// PostgreSQL parser (libpg-query), and only when such a command tag arrives: never per message.
import { loadModule, parseSync } from 'libpg-query';

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
  | { kind: 'discard-all' };

/** Command tags that may change prepared-statement names. */
export function tagChangesNames(tag: string): boolean {
  return tag === 'PREPARE' || tag === 'DEALLOCATE' || tag === 'DEALLOCATE ALL' || tag === 'DISCARD ALL';
}

/**
 * The effect of the `index`-th statement of `sql` (the one the server just completed with `tag`),
 * or null when it cannot be determined (the caller must then assume any name may have changed).
 */
export function nameEffect(sql: string, index: number, tag: string): NameEffect | null {
  if (tag === 'DISCARD ALL') return { kind: 'discard-all' };
  if (tag === 'DEALLOCATE ALL') return { kind: 'deallocate-all' };
  if (!ready) return null;
  let stmts: Array<{ stmt?: Record<string, unknown>; stmt_location?: number; stmt_len?: number }>;
  try {
    stmts = (parseSync(sql) as { stmts?: typeof stmts }).stmts ?? [];
  } catch {
    return null;
  }
  const entry = stmts[index];
  if (!entry?.stmt) return null;
  const node = entry.stmt as { PrepareStmt?: { name?: string }; DeallocateStmt?: { name?: string; isall?: boolean } };
  if (tag === 'PREPARE' && node.PrepareStmt?.name !== undefined) {
    // Locations are byte offsets into the UTF-8 text the parser was given.
    const bytes = Buffer.from(sql, 'utf8');
    const from = entry.stmt_location ?? 0;
    const to = entry.stmt_len ? from + entry.stmt_len : bytes.length;
    return { kind: 'prepare', name: node.PrepareStmt.name, text: bytes.toString('utf8', from, to).trim() };
  }
  if (tag === 'DEALLOCATE' && node.DeallocateStmt) {
    if (node.DeallocateStmt.isall) return { kind: 'deallocate-all' };
    if (node.DeallocateStmt.name !== undefined) return { kind: 'deallocate', name: node.DeallocateStmt.name };
  }
  return null;
}

/** Cheap, conservative test: could running this text change prepared-statement names? */
export function mayChangeNames(sql: string): boolean {
  return /prepare|deallocate|discard/i.test(sql);
}
