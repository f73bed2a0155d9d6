// The result masker without sockets: frames are fed as the relay feeds them, the catalog is a
// source whose lookups the test releases, so the order of what the client gets (and what the
// tracker records) while a lookup runs can be checked exactly.
import { before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { StatementTracker, type EventSink } from '../../src/engines/postgres/statement-tracker.ts';
import { ResultMasker, type ColumnNameSource } from '../../src/engines/postgres/masking/result-masker.ts';
import { FrameScanner } from '../../src/engines/postgres/codec/frame-scanner.ts';
import { ValueMasking } from '../../src/policy/mask-detectors.ts';
import { CompiledPolicy } from '../../src/policy/policy.ts';
import { parsePolicyFile } from '../../src/policy/policy-file.ts';
import { loadPolicyParser } from '../../src/policy/sql-facts.ts';
import type { ColumnName } from '../../src/engines/postgres/upstream/catalog.ts';

const frame = (t: string, body: Buffer) => { const h = Buffer.alloc(5); h[0] = t.charCodeAt(0); h.writeInt32BE(body.length + 4, 1); return Buffer.concat([h, body]); };
const cstr = (s: string) => Buffer.concat([Buffer.from(s), Buffer.from([0])]);
function rowDescription(cols: Array<{ name: string; table: number; attnum: number; type: number }>): Buffer {
  return frame('T', Buffer.concat([Buffer.from([0, cols.length]), ...cols.map((c) => {
    const b = Buffer.alloc(18);
    b.writeUInt32BE(c.table, 0); b.writeInt16BE(c.attnum, 4); b.writeUInt32BE(c.type, 6); b.writeInt16BE(-1, 10); b.writeInt32BE(-1, 12); b.writeInt16BE(0, 16);
    return Buffer.concat([cstr(c.name), b]);
  })]));
}
function dataRow(values: Array<string | null>): Buffer {
  return frame('D', Buffer.concat([Buffer.from([0, values.length]), ...values.map((v) => {
    if (v === null) return Buffer.from([0xff, 0xff, 0xff, 0xff]);
    const b = Buffer.alloc(4); b.writeInt32BE(Buffer.byteLength(v), 0);
    return Buffer.concat([b, Buffer.from(v)]);
  })]));
}
const complete = (tag: string) => frame('C', cstr(tag));
const ready = frame('Z', Buffer.from('I'));

/** Decodes what the client got into readable lines. */
function lines(out: Buffer): string[] {
  const got: string[] = [];
  const s = new FrameScanner({ frame: (t, b, st, e) => {
    if (t === 0x44) {
      const cells: string[] = [];
      let p = st + 2;
      for (let i = 0; i < b.readInt16BE(st); i++) { const l = b.readInt32BE(p); p += 4; cells.push(l < 0 ? 'NULL' : b.toString('utf8', p, p + l)); p += Math.max(0, l); }
      got.push(`D ${cells.join('|')}`);
    } else got.push(String.fromCharCode(t));
  } }, { maxFrameBytes: 1 << 20 });
  s.push(out);
  return got;
}

describe('result masker', () => {
  before(() => loadPolicyParser());
  const plan = new CompiledPolicy(parsePolicyFile('rules:\n  - name: m\n    action: mask\n    mask: { columns: ["public.users.email"], detectors: [github] }\n'), 1, 'h')
    .maskingFor({ identity: 'b', kind: 'agent', groups: [] }, { connection: 'c', type: 'postgres' })!;

  function setup(names: Map<string, ColumnName>) {
    const events: Array<{ type: string; data: Record<string, unknown> }> = [];
    const sink: EventSink = { appendDurable: (type, data) => { events.push({ type, data: data as Record<string, unknown> }); return { seq: events.length, durable: Promise.resolve() }; }, append: (type, data) => { events.push({ type, data: data as Record<string, unknown> }); return events.length; } };
    const tracker = new StatementTracker(sink, { sampleRows: 10, sampleBytes: 4096, paramBytes: 256 }, new Map());
    const lookups: Array<() => void> = [];
    const source: ColumnNameSource = {
      peek: (o, a) => (lookups.length === 0 && names.has(`${o}.${a}`) ? names.get(`${o}.${a}`)! : undefined),
      resolve: () => new Promise<void>((resolve) => lookups.push(resolve)),
      relation: async () => null, peekType: () => ({ rowOf: [], textual: false }), resolveTypes: async () => {}, forget: () => {},
    };
    let released = 0;
    const masker = new ResultMasker(tracker, source, () => { released++; }, (err) => { throw err; });
    masker.use(new ValueMasking(plan, Buffer.alloc(32)));
    const client = new FrameScanner({ frame: (t, b, s, e) => tracker.clientFrame(t, b, s, e) }, { maxFrameBytes: 1 << 20 });
    const server = new FrameScanner({ frame: (t, b, s, e) => masker.frame(t, b, s, e) }, { maxFrameBytes: 1 << 20 });
    const send = (sql: string) => { client.push(frame('Q', cstr(sql))); tracker.takeGate(false); };
    const receive = (chunk: Buffer): Buffer => { masker.begin(chunk); server.push(chunk); return Buffer.concat(masker.take()); };
    return { events, tracker, masker, lookups, send, receive, released: () => released };
  }

  it('holds every frame after a row whose columns must be looked up, then sends them in order, masked, and records what the client got', async () => {
    const names = new Map<string, ColumnName>();
    const t = setup(names);
    const token = 'ghp_' + 'a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8';
    t.send('select email, note from users; select 1');
    const first = t.receive(Buffer.concat([
      rowDescription([{ name: 'x', table: 16400, attnum: 2, type: 25 }, { name: 'note', table: 16400, attnum: 3, type: 25 }]),
      dataRow(['alice@example.com', `t ${token}`]), dataRow(['bob@example.com', null]), complete('SELECT 2'),
      rowDescription([{ name: '?column?', table: 0, attnum: 0, type: 23 }]), dataRow(['1']), complete('SELECT 1'), ready,
    ]));
    assert.deepEqual(lines(first), ['T'], 'only the description goes before the lookup');
    assert.ok(t.masker.waiting);
    assert.equal(t.events.filter((e) => e.type === 'result').length, 0, 'the tracker has not seen the rows yet');
    names.set('16400.2', { schema: 'public', table: 'users', column: 'email' });
    names.set('16400.3', { schema: 'public', table: 'users', column: 'note' });
    t.lookups.shift()!();
    await new Promise((r) => setImmediate(r));
    assert.equal(t.released(), 1);
    assert.deepEqual(lines(Buffer.concat(t.masker.take())), ['D [masked:email]|t [masked:github]', 'D [masked:email]|NULL', 'C', 'T', 'D 1', 'C', 'Z']);
    const result = t.events.find((e) => e.type === 'result')!;
    assert.deepEqual(result.data.sample, [['[masked:email]', 't [masked:github]'], ['[masked:email]', null], ['1']], 'one result for the Query, both statements\' rows');
    assert.deepEqual(result.data.masked, [
      { field: 'rows[*][0]', rule: 'm', column: 'email', count: 2 },
      { field: 'rows[*][1]', rule: 'm', column: 'note', detector: 'github', count: 1 },
    ]);
    // Known now: the same statement again goes through at once.
    t.send('select email, note from users');
    const again = t.receive(Buffer.concat([
      rowDescription([{ name: 'x', table: 16400, attnum: 2, type: 25 }, { name: 'note', table: 16400, attnum: 3, type: 25 }]),
      dataRow(['carol@example.com', 'plain']), complete('SELECT 1'), ready,
    ]));
    assert.deepEqual(lines(again), ['T', 'D [masked:email]|plain', 'C', 'Z']);
  });

  it('passes a chunk with nothing to mask as the very bytes it came in', () => {
    const t = setup(new Map([['16400.1', { schema: 'public', table: 'users', column: 'id' }]]));
    t.send('select id from users');
    const chunk = Buffer.concat([rowDescription([{ name: 'id', table: 16400, attnum: 1, type: 23 }]), dataRow(['1']), dataRow(['2']), complete('SELECT 2'), ready]);
    t.masker.begin(chunk);
    const server = new FrameScanner({ frame: (ty, b, s, e) => t.masker.frame(ty, b, s, e) }, { maxFrameBytes: 1 << 20 });
    server.push(chunk);
    const out = t.masker.take();
    assert.equal(out.length, 1);
    assert.equal(out[0]!.buffer, chunk.buffer, 'no copy');
    assert.equal(out[0]!.length, chunk.length);
  });
});
