import { test } from 'node:test';
import assert from 'node:assert/strict';
import { StatementTracker, type EventSink } from '../../src/engines/postgres/statement-tracker.ts';

interface Ev { seq: number; type: string; data: Record<string, unknown> }

function sink(): EventSink & { events: Ev[] } {
  const events: Ev[] = [];
  return {
    events,
    appendDurable(type, data) {
      const seq = events.length;
      events.push({ seq, type, data: data as Record<string, unknown> });
      return { seq, durable: Promise.resolve() };
    },
    append(type, data) {
      const seq = events.length;
      events.push({ seq, type, data: data as Record<string, unknown> });
      return seq;
    },
  };
}

const cstr = (s: string) => Buffer.from(s + '\0');
function body(...parts: Array<Buffer | number[]>): Buffer {
  return Buffer.concat(parts.map((p) => (Buffer.isBuffer(p) ? p : Buffer.from(p))));
}
const i16 = (n: number) => { const b = Buffer.alloc(2); b.writeInt16BE(n); return b; };
const i32 = (n: number) => { const b = Buffer.alloc(4); b.writeInt32BE(n); return b; };

function rowDescription(names: string[]): Buffer {
  return body(i16(names.length), ...names.map((n) => body(cstr(n), i32(0), i16(0), i32(25), i16(-1), i32(-1), i16(0))));
}
function dataRow(cells: Array<string | null>): Buffer {
  return body(i16(cells.length), ...cells.map((c) => (c === null ? i32(-1) : body(i32(Buffer.byteLength(c)), Buffer.from(c)))));
}
function errorBody(code: string, message: string): Buffer {
  return body(cstr('SERROR'), cstr('C' + code), cstr('M' + message), [0]);
}

const limits = { sampleRows: 2, sampleBytes: 1024, paramBytes: 64 };
const feed = (t: StatementTracker, dir: 'c' | 's', type: string, b: Buffer) =>
  dir === 'c' ? t.clientFrame(type.charCodeAt(0), b, 0, b.length) : t.serverFrame(type.charCodeAt(0), b, 0, b.length);

test('simple query: statement, then its outcome with tag, rows and a bounded sample', () => {
  const s = sink();
  const t = new StatementTracker(s, limits, new Map());
  feed(t, 'c', 'Q', cstr('select x from t'));
  assert.ok(t.gate, 'a statement must produce a durability gate');
  feed(t, 's', 'T', rowDescription(['x']));
  for (const v of ['a', 'b', 'c']) feed(t, 's', 'D', dataRow([v]));
  feed(t, 's', 'C', cstr('SELECT 3'));
  feed(t, 's', 'Z', Buffer.from('I'));
  assert.equal(s.events[0].type, 'query');
  assert.equal(s.events[0].data.text, 'select x from t');
  const r = s.events[1].data;
  assert.equal(r.ref, 0);
  assert.equal(r.tag, 'SELECT 3');
  assert.equal(r.rows, 3);
  assert.deepEqual(r.sample, [['a'], ['b']]);
  assert.equal(r.sampleTruncated, true);
  assert.equal(t.outstanding, 0);
});

test('pipelined extended protocol: params recorded, error attributed, later executes skipped', () => {
  const s = sink();
  const t = new StatementTracker(s, limits, new Map());
  const bind = (portal: string, stmt: string, value: string) =>
    body(cstr(portal), cstr(stmt), i16(0), i16(1), i32(value.length), Buffer.from(value), i16(0));
  feed(t, 'c', 'P', body(cstr('s1'), cstr('select $1::int'), i16(0)));
  feed(t, 'c', 'B', bind('', 's1', '7'));
  feed(t, 'c', 'E', body(cstr(''), i32(0)));
  feed(t, 'c', 'B', bind('', 's1', 'oops'));
  feed(t, 'c', 'E', body(cstr(''), i32(0)));
  feed(t, 'c', 'B', bind('', 's1', '9'));
  feed(t, 'c', 'E', body(cstr(''), i32(0)));
  feed(t, 'c', 'S', Buffer.alloc(0));
  // server: first ok, second fails, third skipped by the server until Sync
  feed(t, 's', '1', Buffer.alloc(0));
  feed(t, 's', '2', Buffer.alloc(0));
  feed(t, 's', 'D', dataRow(['7']));
  feed(t, 's', 'C', cstr('SELECT 1'));
  feed(t, 's', '2', Buffer.alloc(0));
  feed(t, 's', 'E', errorBody('22P02', 'invalid input syntax for type integer: "oops"'));
  feed(t, 's', 'Z', Buffer.from('I'));
  const executes = s.events.filter((e) => e.type === 'execute');
  assert.deepEqual(executes.map((e) => e.data.params), [['7'], ['oops'], ['9']]);
  assert.ok(executes.every((e) => e.data.text === 'select $1::int'));
  const results = s.events.filter((e) => e.type === 'result');
  assert.equal(results.length, 3);
  assert.equal(results[0].data.tag, 'SELECT 1');
  assert.equal((results[1].data.error as Record<string, string>).code, '22P02');
  assert.equal(results[2].data.skipped, true);
  assert.equal(t.outstanding, 0);
});

test('COPY FROM STDIN counts bytes and takes rows from the command tag', () => {
  const s = sink();
  const t = new StatementTracker(s, limits, new Map());
  feed(t, 'c', 'Q', cstr('copy t from stdin'));
  feed(t, 's', 'G', body([0], i16(1), i16(0)));
  assert.equal(t.inCopy, true);
  feed(t, 'c', 'd', Buffer.from('1\n2\n'));
  feed(t, 'c', 'c', Buffer.alloc(0));
  feed(t, 's', 'C', cstr('COPY 2'));
  feed(t, 's', 'Z', Buffer.from('I'));
  const r = s.events[1].data;
  assert.equal(r.rows, 2);
  assert.equal(r.copyBytes, 4);
  assert.equal(t.inCopy, false);
});

test('abandon marks statements without an outcome as incomplete', () => {
  const s = sink();
  const t = new StatementTracker(s, limits, new Map());
  feed(t, 'c', 'Q', cstr('select pg_sleep(10)'));
  t.abandon('client disconnected');
  assert.equal(s.events[1].data.incomplete, 'client disconnected');
  assert.equal(t.outstanding, 0);
});

test('ParameterStatus changes are recorded once and tracked for the pool', () => {
  const s = sink();
  const params = new Map([['application_name', 'psql']]);
  const t = new StatementTracker(s, limits, params);
  feed(t, 's', 'S', body(cstr('application_name'), cstr('psql')));
  feed(t, 's', 'S', body(cstr('application_name'), cstr('agent')));
  assert.equal(s.events.length, 1);
  assert.equal(params.get('application_name'), 'agent');
});
