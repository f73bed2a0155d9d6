// What one large statement costs the gateway, and how it is recorded: a 50 MB statement (simple
// Query and extended-protocol Parse, through the pg driver) runs; the gateway's peak RSS grows by
// a bounded amount (compared with a gateway configured to record such text whole, as before);
// the recording holds the first 64 KiB, the length and the SHA-256 of the whole text as sent, and
// `sessions show` says it is truncated.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import pg from 'pg';
import { startPgCluster, type PgCluster } from '../support/pg-cluster.ts';
import { startTestGateway, type TestGateway } from '../support/gateway.ts';
import { recordOne, type Data } from '../support/recordings.ts';

const MiB = 1024 * 1024;
const FILLER = 50 * MiB;
const LIMIT = 64 * 1024;

let cluster: PgCluster;
let bounded: TestGateway;
let whole: TestGateway;
const tokens = new Map<TestGateway, string>();

before(async () => {
  cluster = await startPgCluster();
  bounded = await startTestGateway();
  // The comparison: statement text recorded whole, as the gateway did before the bound.
  whole = await startTestGateway({ env: { GATEHOUSE_PG_RECORDED_TEXT_BYTES: String(256 * MiB) } });
  for (const gw of [bounded, whole]) tokens.set(gw, await gw.setupPostgres({ identity: 'big', connection: 'app', cluster }));
});
after(async () => {
  await bounded?.stop();
  await whole?.stop();
  await cluster?.stop();
});

/** VmRSS and VmHWM (peak) of a process, in MiB. */
function memory(pid: number): { rss: number; peak: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status)![1]) / 1024;
  return { rss: kb('VmRSS'), peak: kb('VmHWM') };
}

function sha256(s: string): string {
  return createHash('sha256').update(s, 'utf8').digest('hex');
}

async function client(gw: TestGateway): Promise<pg.Client> {
  const c = new pg.Client({ host: gw.pgHost, port: gw.pgPort, user: 'big', database: 'app', password: tokens.get(gw), ssl: { rejectUnauthorized: false } });
  await c.connect();
  return c;
}

/** Runs `run` on a fresh connection and returns the growth of the gateway's peak RSS (MiB). */
async function peakGrowth(gw: TestGateway, run: (c: pg.Client) => Promise<void>): Promise<{ growth: number; before: number; after: number }> {
  const pid = gw.process.pid!;
  const c = await client(gw);
  await c.query('select 1');
  writeFileSync(`/proc/${pid}/clear_refs`, '5'); // resets VmHWM to the current RSS
  const before = memory(pid).rss;
  await run(c);
  await c.end();
  const after = memory(pid).peak;
  return { growth: after - before, before, after };
}

const simpleSql = `select length('${'x'.repeat(FILLER)}') as n`;
const extendedSql = `select length('${'y'.repeat(FILLER)}') + $1::int as n`;

async function runSimple(c: pg.Client): Promise<void> {
  const r = await c.query(simpleSql);
  assert.equal(Number(r.rows[0].n), FILLER);
}
async function runExtended(c: pg.Client): Promise<void> {
  const r = await c.query(extendedSql, [1]);
  assert.equal(Number(r.rows[0].n), FILLER + 1);
}

test('a 50 MB statement: bounded gateway memory, recorded as its first 64 KiB plus length and SHA-256', { timeout: 300_000 }, async () => {
  const figures: string[] = [];
  let bestBounded = Infinity;
  for (const [name, run] of [['simple Query', runSimple], ['extended Parse', runExtended]] as const) {
    const w = await peakGrowth(whole, run);
    const b = await peakGrowth(bounded, run);
    figures.push(`${name}: peak RSS +${b.growth.toFixed(0)} MiB bounded (${b.before.toFixed(0)} → ${b.after.toFixed(0)}) vs +${w.growth.toFixed(0)} MiB recording the whole text (${w.before.toFixed(0)} → ${w.after.toFixed(0)})`);
    bestBounded = Math.min(bestBounded, b.growth);
    assert.ok(b.growth < 150, `${name}: the gateway's peak RSS grew by less than 150 MiB for a 50 MiB statement (${b.growth.toFixed(0)} MiB)`);
    assert.ok(b.growth < w.growth * 0.75, `${name}: bounded recording costs clearly less than whole-text recording (${b.growth.toFixed(0)} vs ${w.growth.toFixed(0)} MiB)`);
  }
  console.log(figures.join('\n'));

  // The record: prefix, length and hash of exactly what was sent.
  const { rec } = await recordOne(bounded, async () => {
    const c = await client(bounded);
    await runSimple(c);
    await runExtended(c);
    await c.end();
  });
  const query = rec.events.find((e) => e.type === 'query' && String((e.data as Data).text).startsWith('select length(\'x'))!.data as Data;
  assert.equal(query.textTruncated, true);
  assert.equal(query.textBytes, Buffer.byteLength(simpleSql));
  assert.equal(query.textSha256, sha256(simpleSql));
  assert.ok(String(query.text).length <= LIMIT && String(query.text).length > LIMIT - 4);
  assert.ok(simpleSql.startsWith(String(query.text)));

  const parse = rec.events.find((e) => e.type === 'parse')!.data as Data;
  assert.equal(parse.textTruncated, true);
  assert.equal(parse.textBytes, Buffer.byteLength(extendedSql));
  assert.equal(parse.textSha256, sha256(extendedSql));
  assert.ok(extendedSql.startsWith(String(parse.text)) && String(parse.text).length <= LIMIT);
  const execute = rec.events.find((e) => e.type === 'execute')!.data as Data;
  assert.equal(execute.textSha256, sha256(extendedSql), 'the execution names the same statement by its hash');
  assert.equal(execute.textTruncated, true);

  // sessions show says so, with the length and hash.
  const shown = await bounded.cliOk(['sessions', 'show', rec.session.id]);
  assert.match(shown, new RegExp(`text truncated: the first \\d+ of ${Buffer.byteLength(simpleSql)} bytes recorded; sha256 ${sha256(simpleSql)}`));
  assert.match(shown, new RegExp(`sha256 ${sha256(extendedSql)}`));
  assert.ok(shown.length < 4 * LIMIT, `sessions show stays short (${shown.length} characters)`);

  // A statement under the limit is recorded whole, without the extra fields.
  const small = await recordOne(bounded, async () => {
    const c = await client(bounded);
    await c.query(`select '${'z'.repeat(1000)}'`);
    await c.end();
  });
  const q = small.rec.events.find((e) => e.type === 'query')!.data as Data;
  assert.equal(q.text, `select '${'z'.repeat(1000)}'`);
  assert.equal(q.textTruncated, undefined);
});
