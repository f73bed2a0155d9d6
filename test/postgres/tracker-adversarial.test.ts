// Adversarial checks of the PostgreSQL statement tracker: wire sequences where the server's
// prepared statements, portals or text decoding change in ways the tracker does not see, checked
// against what PostgreSQL itself did (rows it wrote) and what `sessions show --json` records.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startPgCluster, type PgCluster } from '../support/pg-cluster.ts';
import { startTestGateway, type TestGateway } from '../support/gateway.ts';
import {
  PgWire, bindMessage, closeMessage, connectAndLogin, decodeError, describeMessages, executeMessage, frame, parseMessage,
  queryMessage, syncMessage, type WireMessage,
} from '../support/pg-wire.ts';
import type { EventView, SessionView } from '../../src/cli/format.ts';

const IDENTITY = 'adversary';
const CONNECTION = 'app';
const HARMLESS = 'select 1';

let pg: PgCluster;
let gw: TestGateway;
let token: string;
let counter = 0;

before(async () => {
  pg = await startPgCluster();
  gw = await startTestGateway();
  token = await gw.setupPostgres({ identity: IDENTITY, connection: CONNECTION, cluster: pg });
  await pg.sql([
    'create table adv_acct (id int primary key, balance bigint);',
    'create table adv_text (id int primary key, body text);',
    // A volatile function with a side effect: what runs when a cursor over it is fetched.
    'create function adv_bump(i int) returns int language sql as $$ update adv_acct set balance = balance + 1000000 where id = i returning 1 $$;',
    'grant all on adv_acct, adv_text to scram_user; grant execute on function adv_bump(int) to scram_user;',
  ].join('\n'), 'app');
});

after(async () => {
  await gw?.stop();
  await pg?.stop();
});

async function freshAccount(): Promise<number> {
  const id = ++counter;
  await pg.sql(`insert into adv_acct values (${id}, 0)`, 'app');
  return id;
}

async function balance(id: number): Promise<number> {
  return Number(await pg.sql(`select balance from adv_acct where id = ${id}`, 'app'));
}

async function login(app: string): Promise<PgWire> {
  const { wire } = await connectAndLogin({
    host: gw.pgHost, port: gw.pgPort, user: IDENTITY, database: CONNECTION, password: token, params: { application_name: app },
  });
  return wire;
}

async function sessionEvents(app: string): Promise<EventView[]> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const s = (JSON.parse(await gw.cliOk(['sessions', 'list', '--json', '--limit', '1000'])) as SessionView[]).find((x) => x.applicationName === app);
    if (s?.endReason) return (JSON.parse(await gw.cliOk(['sessions', 'show', s.id, '--json'])) as { events: EventView[] }).events;
    if (Date.now() > deadline) throw new Error(`session ${app} did not end`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function resultOf(events: EventView[], seq: number): Record<string, unknown> | undefined {
  return events.find((e) => e.type === 'result' && e.data.ref === seq)?.data;
}

function codes(messages: WireMessage[]): string[] {
  return messages.filter((m) => m.type === 'E').map((m) => decodeError(m.body).code);
}

function timeline(events: EventView[]): string {
  return JSON.stringify(events.map((e) => [e.seq, e.type, e.data.text ?? e.data.tag ?? e.data.ref]));
}

/** The text an execute's record says ran (its `ran` correction, if the outcome carries one). */
function recordedText(events: EventView[], exec: EventView): string | null {
  const ran = resultOf(events, exec.seq)?.ran as { text: string | null } | undefined;
  return ran ? ran.text : (exec.data.text as string | null);
}

test('PREPARE run through SPI (DO block EXECUTE) redefines a name a later protocol Bind uses', async () => {
  const id = await freshAccount();
  const app = `adv-do-prepare-${id}`;
  const wire = await login(app);
  wire.send([parseMessage('px', HARMLESS), syncMessage()]);
  assert.deepEqual(codes(await wire.readUntilReady()), []);
  wire.send([queryMessage(`DO $$ BEGIN EXECUTE 'DEALLOCATE px'; EXECUTE 'PREPARE px AS select adv_bump(${id})'; END $$`)]);
  assert.deepEqual(codes(await wire.readUntilReady()), []);
  wire.send([bindMessage('', 'px', []), executeMessage(), syncMessage()]);
  const out = await wire.readUntilReady();
  assert.deepEqual(codes(out), [], describeMessages(out));
  wire.terminate();
  assert.equal(await balance(id), 1_000_000, 'PostgreSQL ran the statement the DO block prepared');
  const events = await sessionEvents(app);
  const exec = events.filter((e) => e.type === 'execute' && e.data.statement === 'px').pop();
  assert.ok(exec, timeline(events));
  assert.notEqual(recordedText(events, exec), HARMLESS, `recorded as "${HARMLESS}" though adv_bump ran: ${timeline(events)}`);
});

test('SQL CLOSE + DECLARE replace a protocol portal; a protocol Execute of that name runs the cursor', async () => {
  const id = await freshAccount();
  const app = `adv-cursor-swap-${id}`;
  const wire = await login(app);
  wire.send([queryMessage('begin')]);
  await wire.readUntilReady();
  wire.send([parseMessage('s1', HARMLESS), bindMessage('c', 's1', []), syncMessage()]);
  assert.deepEqual(codes(await wire.readUntilReady()), []);
  wire.send([queryMessage(`CLOSE c; DECLARE c CURSOR FOR SELECT adv_bump(${id})`)]);
  assert.deepEqual(codes(await wire.readUntilReady()), []);
  wire.send([executeMessage('c'), syncMessage()]);
  const out = await wire.readUntilReady();
  assert.deepEqual(codes(out), [], describeMessages(out));
  wire.send([queryMessage('commit')]);
  await wire.readUntilReady();
  wire.terminate();
  assert.equal(await balance(id), 1_000_000, 'fetching the cursor ran adv_bump');
  const events = await sessionEvents(app);
  const exec = events.filter((e) => e.type === 'execute' && e.data.portal === 'c').pop();
  assert.ok(exec, timeline(events));
  assert.notEqual(recordedText(events, exec), HARMLESS, `recorded as "${HARMLESS}" though the cursor ran adv_bump: ${timeline(events)}`);
});

test('SQL cursor fetched by protocol Execute: the record does not claim an unknown portal ran nothing identifiable', async () => {
  const id = await freshAccount();
  const app = `adv-cursor-exec-${id}`;
  const wire = await login(app);
  wire.send([queryMessage(`begin; DECLARE cur CURSOR FOR SELECT adv_bump(${id})`)]);
  assert.deepEqual(codes(await wire.readUntilReady()), []);
  wire.send([executeMessage('cur'), syncMessage()]);
  assert.deepEqual(codes(await wire.readUntilReady()), []);
  wire.send([queryMessage('commit')]);
  await wire.readUntilReady();
  wire.terminate();
  assert.equal(await balance(id), 1_000_000);
  const events = await sessionEvents(app);
  const exec = events.filter((e) => e.type === 'execute' && e.data.portal === 'cur').pop();
  assert.ok(exec, timeline(events));
  assert.match(String(recordedText(events, exec)), /adv_bump/, timeline(events));
});

test('client_encoding changed in a Query and a statement pipelined behind it: text is decoded in the new encoding', async () => {
  const id = ++counter;
  const app = `adv-encoding-${id}`;
  const wire = await login(app);
  // In LATIN1, the bytes C3 A9 are two characters, "Ã©"; read as UTF-8 they would be "é".
  const insert = Buffer.concat([Buffer.from(`insert into adv_text values (${id}, '`), Buffer.from([0xc3, 0xa9]), Buffer.from("')"), Buffer.from([0])]);
  wire.send([queryMessage("set client_encoding to 'LATIN1'"), frame('Q', insert)]);
  assert.deepEqual(codes(await wire.readUntilReady()), []);
  assert.deepEqual(codes(await wire.readUntilReady()), []);
  wire.terminate();
  assert.equal(await pg.sql(`select body from adv_text where id = ${id}`, 'app'), 'Ã©', 'PostgreSQL stored two characters');
  const events = await sessionEvents(app);
  const q = events.find((e) => e.type === 'query' && String(e.data.text).startsWith('insert into adv_text'));
  assert.ok(q, timeline(events));
  const faithful = q.data.text === `insert into adv_text values (${id}, 'Ã©')` || q.data.raw !== undefined;
  assert.ok(faithful, `recorded ${JSON.stringify(q.data)}; the server read 'Ã©'`);
});

test('control: Close of a statement a portal is bound from, then a new Parse of the name: the portal still runs the old text', async () => {
  const id = await freshAccount();
  const app = `adv-close-in-use-${id}`;
  const wire = await login(app);
  wire.send([queryMessage('begin')]);
  await wire.readUntilReady();
  // Close of the statement a portal was bound from: the portal keeps running the old plan.
  wire.send([
    parseMessage('cu', `select adv_bump(${id})`), bindMessage('pu', 'cu', []), closeMessage('S', 'cu'),
    parseMessage('cu', HARMLESS), executeMessage('pu'), syncMessage(),
  ]);
  const out = await wire.readUntilReady();
  assert.deepEqual(codes(out), [], describeMessages(out));
  wire.send([queryMessage('commit')]);
  await wire.readUntilReady();
  wire.terminate();
  assert.equal(await balance(id), 1_000_000);
  const events = await sessionEvents(app);
  const exec = events.filter((e) => e.type === 'execute' && e.data.portal === 'pu').pop()!;
  assert.match(String(recordedText(events, exec)), /adv_bump/);
});

/** Sends `rows` pipelined Parse/Bind/Execute/Sync inserts into `table` in one write; ms until all are answered. */
async function pipelinedInserts(app: string, table: string, rows: number): Promise<number> {
  const wire = await login(app);
  const batch: Buffer[] = [];
  for (let i = 0; i < rows; i++) {
    batch.push(parseMessage('', `insert into ${table} values ($1, 'x')`), bindMessage('', '', [String(i)]), executeMessage(), syncMessage());
  }
  const started = performance.now();
  wire.send(batch);
  for (let i = 0; i < rows; i++) assert.deepEqual(codes(await wire.readUntilReady()), []);
  const ms = performance.now() - started;
  wire.terminate();
  return ms;
}

test('a pipelined statement whose text merely contains "prepare" does not turn the pipeline into lock-step', async () => {
  await pg.sql('create table adv_plain_log (id int, note text); create table adv_prepared_log (id int, note text); grant all on adv_plain_log, adv_prepared_log to scram_user;', 'app');
  const rows = 1000;
  const plain = await pipelinedInserts('adv-pipeline-plain', 'adv_plain_log', rows);
  const marked = await pipelinedInserts('adv-pipeline-prepared', 'adv_prepared_log', rows);
  assert.equal(await pg.sql('select count(*) from adv_prepared_log', 'app'), String(rows));
  assert.ok(marked < plain * 4 + 500, `${rows} pipelined inserts: ${Math.round(plain)} ms into adv_plain_log, ${Math.round(marked)} ms into adv_prepared_log`);
});

test('a WITH HOLD cursor outlives its transaction: a protocol Execute of it after COMMIT is recorded with its DECLARE; CLOSE ALL forgets it', async () => {
  const id = await freshAccount();
  const app = `adv-hold-cursor-${id}`;
  const wire = await login(app);
  wire.send([queryMessage(`begin; DECLARE held CURSOR WITH HOLD FOR SELECT adv_bump(${id}); commit`)]);
  assert.deepEqual(codes(await wire.readUntilReady()), []);
  wire.send([executeMessage('held'), syncMessage()]);
  assert.deepEqual(codes(await wire.readUntilReady()), []);
  wire.send([queryMessage('CLOSE ALL')]);
  assert.deepEqual(codes(await wire.readUntilReady()), []);
  wire.send([executeMessage('held'), syncMessage()]);
  assert.deepEqual(codes(await wire.readUntilReady()), ['34000'], 'the server closed it');
  wire.terminate();
  const events = await sessionEvents(app);
  const [first, second] = events.filter((e) => e.type === 'execute' && e.data.portal === 'held');
  assert.match(String(first.data.text), /^DECLARE held CURSOR WITH HOLD FOR SELECT adv_bump/, timeline(events));
  assert.equal(first.data.cursor, true);
  assert.equal(second.data.text, null, 'after CLOSE ALL the name means nothing');
});

test('a procedure (CALL) may re-prepare names: executions of names defined before it are recorded unverified', async () => {
  const id = await freshAccount();
  const app = `adv-call-${id}`;
  await pg.sql(`create or replace procedure adv_swap(i int) language plpgsql as $$ begin execute 'DEALLOCATE pc'; execute format('PREPARE pc AS select adv_bump(%s)', i); end $$; grant execute on procedure adv_swap(int) to scram_user;`, 'app');
  const wire = await login(app);
  wire.send([parseMessage('pc', HARMLESS), syncMessage()]);
  assert.deepEqual(codes(await wire.readUntilReady()), []);
  // The CALL and the Bind of pc in one pipeline: the Bind waits for the CALL's answer.
  wire.send([parseMessage('', `call adv_swap(${id})`), bindMessage('', '', []), executeMessage(), bindMessage('', 'pc', []), executeMessage(), syncMessage()]);
  const out = await wire.readUntilReady();
  assert.deepEqual(codes(out), [], describeMessages(out));
  wire.terminate();
  assert.equal(await balance(id), 1_000_000);
  const events = await sessionEvents(app);
  const exec = events.filter((e) => e.type === 'execute' && e.data.statement === 'pc').pop()!;
  assert.equal(exec.data.text, null, timeline(events));
  assert.equal(exec.data.lastKnownText, HARMLESS);
  assert.match(String(exec.data.unverified), /a CALL \(event \d+\) ran since this name was defined/);
  const session = (JSON.parse(await gw.cliOk(['sessions', 'list', '--json', '--limit', '1000'])) as SessionView[]).find((x) => x.applicationName === app)!;
  const shown = await gw.cliOk(['sessions', 'show', session.id]);
  assert.match(shown, /execute\s+\(unverified statement pc\)\n\s+! a CALL \(event \d+\) ran since this name was defined and may have redefined it; last known text: select 1\n/);
});
