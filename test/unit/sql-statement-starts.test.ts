// The lexer that tells the PostgreSQL tracker where statements begin: it must see every statement
// the server would run (or the tracker records a stale name) and must not see one inside a string,
// comment or body (or every pipeline touching a table like prepared_orders goes lock-step).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { someStatementStartsWith, statementKeywords } from '../../src/engines/postgres/sql-statement-starts.ts';
import { mayChangeEncoding, mayChangeNames } from '../../src/engines/postgres/prepared-names.ts';

const PREPARE = new Set(['PREPARE']);

test('statement starts: semicolons inside literals, identifiers, comments and dollar quotes separate nothing', () => {
  assert.deepEqual(statementKeywords('select 1; prepare x as select 2'), ['SELECT', 'PREPARE']);
  assert.deepEqual(statementKeywords(`select 'a; prepare' ; /* ; prepare */ -- ; deallocate\n  (select 1); DECLARE c cursor for select 1`), ['SELECT', 'SELECT', 'DECLARE']);
  assert.deepEqual(statementKeywords('select "x;prepare" from t'), ['SELECT']);
  assert.deepEqual(statementKeywords('select $$ ; prepare $$, $q$ ; close $q$; close c'), ['SELECT', 'CLOSE']);
  assert.deepEqual(statementKeywords('select a$b; execute p'), ['SELECT', 'EXECUTE'], 'a$b is an identifier, not a dollar quote');
  assert.deepEqual(statementKeywords('select $1; do $body$ begin end $body$'), ['SELECT', 'DO'], '$1 is a parameter');
  assert.deepEqual(statementKeywords('/* a /* nested ; prepare */ still ; */ select 1'), ['SELECT'], 'comments nest');
  assert.deepEqual(statementKeywords('  ;; (( select 1 )) ;'), ['SELECT']);
  assert.deepEqual(statementKeywords('insert into prepared_orders values (1)'), ['INSERT']);
  assert.deepEqual(statementKeywords("select date'2020-01-01'; deallocate x"), ['SELECT', 'DEALLOCATE']);
});

test('statement starts: backslashes are read both ways, so standard_conforming_strings=off cannot hide a statement', () => {
  // With the setting off, \\' escapes the quote and the PREPARE is a statement of its own.
  assert.equal(someStatementStartsWith(`select '\\'' ; prepare x as select 1`, PREPARE), true);
  assert.equal(someStatementStartsWith(`select E'\\''; prepare y as select 1`, PREPARE), true);
  assert.equal(someStatementStartsWith(`select E'\\\\'; select 1`, PREPARE), false);
  // date'\\' is not an escape string: the E belongs to the word.
  assert.equal(someStatementStartsWith(`select date'\\' ; prepare z as select 1`, PREPARE), true);
});

test('statement starts: unterminated literals and comments end the text without a false statement', () => {
  assert.deepEqual(statementKeywords("select 'open ; prepare x"), ['SELECT']);
  assert.deepEqual(statementKeywords('select /* open ; prepare x'), ['SELECT']);
  assert.deepEqual(statementKeywords('select $a$ open ; prepare x'), ['SELECT']);
  assert.deepEqual(statementKeywords(''), []);
});

test('name and encoding changes: only statements that begin with such a command count', () => {
  for (const sql of ['prepare p as select 1', 'DEALLOCATE ALL', 'discard all', 'declare c cursor for select 1', 'close c', 'do $$ begin end $$', 'call p()', 'execute p', 'select 1;Prepare q as select 2']) {
    assert.equal(mayChangeNames(sql), true, sql);
  }
  for (const sql of ['insert into prepared_orders values (1)', "select 'prepare'", 'update t set discard = 1', 'select * from cursors']) {
    assert.equal(mayChangeNames(sql), false, sql);
  }
  for (const sql of ["set client_encoding to 'LATIN1'", 'SET NAMES latin1', 'reset all', 'discard all', "select set_config('client_encoding', 'LATIN1', false)", 'call p()']) {
    assert.equal(mayChangeEncoding(sql), true, sql);
  }
  assert.equal(mayChangeEncoding('select * from settings'), false);
});

test('statement starts: linear on hostile input', () => {
  const nasty = `${"'".repeat(100_000)}${'/*'.repeat(50_000)}${'$a'.repeat(50_000)}`;
  const t0 = performance.now();
  someStatementStartsWith(nasty, PREPARE);
  someStatementStartsWith('select 1;'.repeat(100_000), PREPARE);
  assert.ok(performance.now() - t0 < 2000, `${Math.round(performance.now() - t0)} ms`);
});
