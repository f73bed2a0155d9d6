// Statement text of record is bounded: a long statement keeps its first bytes (cut on a character
// boundary), the length and the SHA-256 of the whole text; what the tracker decides from the text
// (names a PREPARE creates, beyond the recorded prefix) still reads the whole statement.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { StatementTracker, type EventSink } from '../../src/engines/postgres/statement-tracker.ts';
import { loadSqlParser } from '../../src/engines/postgres/prepared-names.ts';
import { boundedString } from '../../src/engines/postgres/recorded-text.ts';

interface Ev { seq: number; type: string; data: Record<string, unknown> }
function sink(): EventSink & { events: Ev[] } {
  const events: Ev[] = [];
  const add = (type: string, data: unknown) => { events.push({ seq: events.length, type, data: data as Record<string, unknown> }); return events.length - 1; };
  return { events, appendDurable: (type, data) => ({ seq: add(type, data), durable: Promise.resolve() }), append: add };
}
const cstr = (s: string) => Buffer.from(s + '\0');
const i16 = (n: number) => { const b = Buffer.alloc(2); b.writeInt16BE(n); return b; };
const i32 = (n: number) => { const b = Buffer.alloc(4); b.writeInt32BE(n); return b; };
const LIMIT = 1024;
const limits = { sampleRows: 2, sampleBytes: 1024, paramBytes: 64, textBytes: LIMIT };
const feed = (t: StatementTracker, dir: 'c' | 's', type: string, b: Buffer) =>
  dir === 'c' ? t.clientFrame(type.charCodeAt(0), b, 0, b.length) : t.serverFrame(type.charCodeAt(0), b, 0, b.length);
const sha256 = (s: string) => createHash('sha256').update(s, 'utf8').digest('hex');
const bindUnnamed = (stmt: string) => Buffer.concat([cstr(''), cstr(stmt), i16(0), i16(0), i16(0)]);
const execute = () => Buffer.concat([cstr(''), i32(0)]);

before(() => loadSqlParser());

test('a long query is recorded as its first bytes (on a UTF-8 character boundary), its length and SHA-256', () => {
  const s = sink();
  const t = new StatementTracker(s, limits, new Map());
  const sql = `select '${'é'.repeat(3000)}'`;
  feed(t, 'c', 'Q', cstr(sql));
  const d = s.events[0]!.data;
  assert.equal(d.textTruncated, true);
  assert.equal(d.textBytes, Buffer.byteLength(sql));
  assert.equal(d.textSha256, sha256(sql));
  assert.ok(Buffer.byteLength(String(d.text)) <= LIMIT && Buffer.byteLength(String(d.text)) >= LIMIT - 1);
  assert.ok(sql.startsWith(String(d.text)), 'the prefix is a clean prefix (no split character)');
  assert.ok(!String(d.text).includes('\uFFFD'));
});

test('a PREPARE beyond the recorded prefix is still seen: executions of its name get its text', () => {
  const s = sink();
  const t = new StatementTracker(s, limits, new Map());
  feed(t, 'c', 'Q', cstr(`select '${'a'.repeat(5000)}'; prepare p as select 42`));
  assert.equal(s.events[0]!.data.textTruncated, true);
  feed(t, 's', 'C', cstr('SELECT 1'));
  feed(t, 's', 'C', cstr('PREPARE'));
  feed(t, 's', 'Z', Buffer.from('I'));
  feed(t, 'c', 'B', bindUnnamed('p'));
  feed(t, 'c', 'E', execute());
  feed(t, 'c', 'S', Buffer.alloc(0));
  const ex = s.events.find((e) => e.type === 'execute')!.data;
  assert.equal(ex.text, 'prepare p as select 42'); // the PREPARE statement names what runs
  assert.equal(ex.textTruncated, undefined);
});

test('a long PREPAREd statement: its executions carry the bounded text and the hash of the whole', () => {
  const s = sink();
  const t = new StatementTracker(s, limits, new Map());
  const inner = `prepare q as select '${'b'.repeat(5000)}'`;
  feed(t, 'c', 'Q', cstr(inner));
  feed(t, 's', 'C', cstr('PREPARE'));
  feed(t, 's', 'Z', Buffer.from('I'));
  feed(t, 'c', 'B', bindUnnamed('q'));
  feed(t, 'c', 'E', execute());
  const ex = s.events.find((e) => e.type === 'execute')!.data;
  assert.equal(ex.textTruncated, true);
  assert.equal(ex.textSha256, sha256(inner));
  assert.equal(ex.textBytes, Buffer.byteLength(inner));
  assert.ok(inner.startsWith(String(ex.text)) && String(ex.text).length <= LIMIT);
});

test('a long Parse: the parse and the execute name the same whole text by hash; short text is unchanged', () => {
  const s = sink();
  const t = new StatementTracker(s, limits, new Map());
  const sql = `select '${'c'.repeat(4000)}' || $1`;
  feed(t, 'c', 'P', Buffer.concat([cstr(''), cstr(sql), i16(0)]));
  feed(t, 'c', 'B', bindUnnamed(''));
  feed(t, 'c', 'E', execute());
  const parse = s.events.find((e) => e.type === 'parse')!.data;
  const ex = s.events.find((e) => e.type === 'execute')!.data;
  assert.equal(parse.textSha256, sha256(sql));
  assert.equal(ex.textSha256, sha256(sql));
  assert.equal(ex.text, parse.text);
  assert.deepEqual(boundedString('short', LIMIT), { text: 'short' });
});

test('the lexer reads a long statement\'s bytes as it reads the decoded text (ASCII-compatible encodings)', async () => {
  const { mayChangeEncoding, mayChangeNames } = await import('../../src/engines/postgres/prepared-names.ts');
  const { sqlBytes } = await import('../../src/engines/postgres/sql-bytes.ts');
  const samples = [
    'select 1; prepare x as select 2', `select 'a; prepare' ; /* ; prepare */ -- ; deallocate\n  (select 1); DECLARE c cursor for select 1`,
    'select "x;prepare" from t', 'select $$ ; prepare $$, $q$ ; close $q$; close c', 'select $é$ ; prepare $é$; select 1', 'select $é$ ; prepare $é$; close c',
    'select a$b; execute p', '/* a /* nested ; prepare */ still ; */ select 1', `select '\\'' ; prepare x as select 1`, `select E'\\\\'; select 1`,
    "select 'é;ü'; deallocate x", 'select 1; SET client_encoding = latin1', "select SET_CONFIG('client_encoding', 'latin1', false)", 'select * from settings',
    'insert into prepared_orders values (1)', "select 'open ; prepare x", '',
  ];
  for (const sql of samples) {
    const bytes = Buffer.from(`--pad\n${sql}`);
    const view = sqlBytes(bytes, 6, bytes.length);
    assert.equal(mayChangeNames(view), mayChangeNames(sql), `names: ${sql}`);
    assert.equal(mayChangeEncoding(view), mayChangeEncoding(sql), `encoding: ${sql}`);
  }
});
