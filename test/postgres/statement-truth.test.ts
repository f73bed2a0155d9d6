// The recording names the SQL the server really ran, whatever the client does with statement
// names: a Parse the server rejected (duplicate name) or skipped (after an error earlier in the
// batch) never replaces the statement it holds, SQL-level DEALLOCATE / PREPARE redefine a name,
// and pipelined batches whose outcome decides which statement a later Bind gets are waited for.
// Raw protocol sequences, checked against what PostgreSQL itself did (the balance it holds).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startPgCluster, type PgCluster } from '../support/pg-cluster.ts';
import { startTestGateway, type TestGateway } from '../support/gateway.ts';
import {
  PgWire, bindMessage, closeMessage, connectAndLogin, decodeError, describeMessages, executeMessage, frame, parseMessage,
  queryMessage, syncMessage, type WireMessage,
} from '../support/pg-wire.ts';
import type { EventView, SessionView } from '../../src/cli/format.ts';

const IDENTITY = 'truth';
const CONNECTION = 'app';
const EVIL = 'update acct set balance = balance + 1000000 where id = $1';
const HARMLESS = 'update acct set balance = balance where id = $1';

let pg: PgCluster;
let gw: TestGateway;
let token: string;
let counter = 0;

before(async () => {
  pg = await startPgCluster();
  gw = await startTestGateway();
  token = await gw.setupPostgres({ identity: IDENTITY, connection: CONNECTION, cluster: pg });
  await pg.sql('create table acct (id int primary key, balance bigint); grant all on acct to scram_user;', 'app');
});

after(async () => {
  await gw?.stop();
  await pg?.stop();
});

async function freshAccount(): Promise<number> {
  const id = ++counter;
  await pg.sql(`insert into acct values (${id}, 0)`, 'app');
  return id;
}

async function balance(id: number): Promise<number> {
  return Number(await pg.sql(`select balance from acct where id = ${id}`, 'app'));
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

/** The last execute of statement `name` that was not skipped, and the text its record names. */
function executedText(events: EventView[], name: string): string | null {
  const runs = events.filter((e) => e.type === 'execute' && e.data.statement === name && !resultOf(events, e.seq)?.skipped);
  assert.ok(runs.length > 0, `an execute of ${name} is recorded: ${JSON.stringify(events.map((e) => [e.seq, e.type, e.data.text]))}`);
  const last = runs[runs.length - 1];
  const ran = resultOf(events, last.seq)?.ran as { text: string } | undefined;
  return ran ? ran.text : (last.data.text as string | null);
}

const swapBatch = (id: number): Buffer[] => [
  parseMessage('', 'select 1/0'), bindMessage('', '', []), executeMessage(),
  closeMessage('S', 'sd'), parseMessage('sd', HARMLESS), syncMessage(),
];

test('statement swap: a Parse the server skipped after an error does not replace the statement it runs (batches read one by one)', async () => {
  const id = await freshAccount();
  const app = `swap-stepwise-${id}`;
  const wire = await login(app);
  wire.send([parseMessage('sd', EVIL), syncMessage()]);
  await wire.readUntilReady();
  wire.send(swapBatch(id));
  assert.deepEqual(codes(await wire.readUntilReady()), ['22012']);
  wire.send([bindMessage('', 'sd', [String(id)]), executeMessage(), syncMessage()]);
  const last = await wire.readUntilReady();
  assert.deepEqual(codes(last), [], describeMessages(last));
  wire.terminate();
  assert.equal(await balance(id), 1_000_000, 'PostgreSQL ran the statement it kept: the +1000000 update');
  const events = await sessionEvents(app);
  assert.equal(executedText(events, 'sd'), EVIL);
  // The skipped Parse is in the chain, marked skipped; the original Parse is too.
  const parses = events.filter((e) => e.type === 'parse' && e.data.name === 'sd');
  assert.deepEqual(parses.map((e) => e.data.text), [EVIL, HARMLESS]);
  assert.equal(resultOf(events, parses[1].seq)?.skipped, true);
  // And a reviewer reading the timeline sees the skipped redefinition as such.
  const sessions = JSON.parse(await gw.cliOk(['sessions', 'list', '--json', '--limit', '1000'])) as SessionView[];
  const shown = await gw.cliOk(['sessions', 'show', sessions.find((x) => x.applicationName === app)!.id]);
  assert.match(shown, /prepare {2}sd: update acct set balance = balance where id = \$1 {2}→ not executed/);
  assert.match(shown, /execute  update acct set balance = balance \+ 1000000 where id = \$1 {2}params=\["\d+"\]/);
});

test('statement swap, pipelined: the Bind that depends on an unanswered batch waits for its answer', async () => {
  const id = await freshAccount();
  const app = `swap-pipelined-${id}`;
  const wire = await login(app);
  // All three batches in one write, as a pipelining driver would send them.
  wire.send([parseMessage('sd', EVIL), syncMessage(), ...swapBatch(id), bindMessage('', 'sd', [String(id)]), executeMessage(), syncMessage()]);
  await wire.readUntilReady();
  assert.deepEqual(codes(await wire.readUntilReady()), ['22012']);
  assert.deepEqual(codes(await wire.readUntilReady()), []);
  wire.terminate();
  assert.equal(await balance(id), 1_000_000);
  const events = await sessionEvents(app);
  assert.equal(executedText(events, 'sd'), EVIL);
  const exec = events.filter((e) => e.type === 'execute' && e.data.statement === 'sd').pop()!;
  assert.equal(exec.data.provisional, undefined, 'recorded from the server\'s answer, not a guess');
});

test('a duplicate Parse (42P05) leaves the original statement in place, and the record says so', async () => {
  const id = await freshAccount();
  const app = `dup-parse-${id}`;
  const wire = await login(app);
  wire.send([parseMessage('sx', EVIL), syncMessage()]);
  await wire.readUntilReady();
  wire.send([parseMessage('sx', HARMLESS), syncMessage(), bindMessage('', 'sx', [String(id)]), executeMessage(), syncMessage()]);
  assert.deepEqual(codes(await wire.readUntilReady()), ['42P05']);
  assert.deepEqual(codes(await wire.readUntilReady()), []);
  wire.terminate();
  assert.equal(await balance(id), 1_000_000);
  const events = await sessionEvents(app);
  assert.equal(executedText(events, 'sx'), EVIL);
  const dup = events.filter((e) => e.type === 'parse' && e.data.text === HARMLESS)[0];
  assert.equal((resultOf(events, dup.seq)?.error as { code: string }).code, '42P05');
});

test('a duplicate portal name (42P03) does not replace the open portal', async () => {
  const id = await freshAccount();
  const app = `dup-portal-${id}`;
  const wire = await login(app);
  wire.send([queryMessage('begin')]);
  await wire.readUntilReady();
  wire.send([parseMessage('e', EVIL), parseMessage('h', HARMLESS), bindMessage('p1', 'e', [String(id)]), syncMessage()]);
  await wire.readUntilReady();
  wire.send([bindMessage('p1', 'h', [String(id)]), syncMessage()]);
  assert.deepEqual(codes(await wire.readUntilReady()), ['42P03']);
  // The transaction is aborted by the error: roll back and retry inside a fresh one.
  wire.send([queryMessage('rollback; begin')]);
  await wire.readUntilReady();
  wire.send([bindMessage('p1', 'e', [String(id)]), syncMessage()]);
  await wire.readUntilReady();
  wire.send([bindMessage('p1', 'h', [String(id)]), syncMessage(), executeMessage('p1'), syncMessage()]);
  assert.deepEqual(codes(await wire.readUntilReady()), ['42P03']);
  await wire.readUntilReady();
  wire.send([queryMessage('rollback')]);
  await wire.readUntilReady();
  wire.terminate();
  const events = await sessionEvents(app);
  const exec = events.filter((e) => e.type === 'execute' && e.data.portal === 'p1').pop()!;
  assert.equal(exec.data.text, EVIL, 'the portal the server kept is the one recorded');
});

for (const pipelined of [false, true]) {
  test(`SQL DEALLOCATE + PREPARE redefine a name a protocol Bind then uses (${pipelined ? 'pipelined' : 'stepwise'})`, async () => {
    const id = await freshAccount();
    const app = `sql-prepare-${pipelined ? 'p' : 's'}-${id}`;
    const wire = await login(app);
    wire.send([parseMessage('sq', HARMLESS), syncMessage()]);
    await wire.readUntilReady();
    const redefine = queryMessage(`DEALLOCATE sq; PREPARE sq (int) AS ${EVIL.replace('$1', '$1')}`);
    const run = [bindMessage('', 'sq', [String(id)]), executeMessage(), syncMessage()];
    if (pipelined) {
      wire.send([redefine, ...run]);
      await wire.readUntilReady();
      assert.deepEqual(codes(await wire.readUntilReady()), []);
    } else {
      wire.send([redefine]);
      assert.deepEqual(codes(await wire.readUntilReady()), []);
      wire.send(run);
      assert.deepEqual(codes(await wire.readUntilReady()), []);
    }
    wire.terminate();
    assert.equal(await balance(id), 1_000_000);
    const events = await sessionEvents(app);
    const text = executedText(events, 'sq');
    assert.match(String(text), /^PREPARE sq \(int\) AS update acct set balance = balance \+ 1000000/);
    const exec = events.filter((e) => e.type === 'execute' && e.data.statement === 'sq').pop()!;
    const source = events.find((e) => e.seq === exec.data.textRef);
    assert.equal(source?.type, 'query', 'the execute points at the query that prepared it');
  });
}

test('DISCARD ALL and DEALLOCATE ALL forget every name', async () => {
  const app = `discard-${++counter}`;
  const wire = await login(app);
  wire.send([parseMessage('d1', 'select 1'), syncMessage()]);
  await wire.readUntilReady();
  wire.send([queryMessage('DEALLOCATE ALL'), bindMessage('', 'd1', []), executeMessage(), syncMessage()]);
  await wire.readUntilReady();
  assert.deepEqual(codes(await wire.readUntilReady()), ['26000']);
  wire.terminate();
  const events = await sessionEvents(app);
  // The Bind failed on the server (no such statement); nothing ran, and the record shows the error.
  const err = events.find((e) => e.type === 'error' && e.data.during === 'bind');
  assert.equal(err?.data.code, '26000');
  const exec = events.filter((e) => e.type === 'execute').pop()!;
  assert.equal(resultOf(events, exec.seq)?.skipped, true);
});

test('a pipelined batch of a driver shape (unnamed statement per batch) is not slowed into lock-step', async () => {
  const app = `unnamed-pipeline-${++counter}`;
  const wire = await login(app);
  const batches: Buffer[] = [];
  for (let i = 0; i < 50; i++) batches.push(parseMessage('', `select ${i} as n`), bindMessage('', '', []), executeMessage(), syncMessage());
  wire.send(batches);
  for (let i = 0; i < 50; i++) assert.deepEqual(codes(await wire.readUntilReady()), []);
  wire.terminate();
  const events = await sessionEvents(app);
  const execs = events.filter((e) => e.type === 'execute');
  assert.equal(execs.length, 50);
  execs.forEach((e, i) => assert.equal(e.data.text, `select ${i} as n`));
  assert.ok(!events.some((e) => e.data.provisional), 'no execution needed a guess');
});

test('Flush-only clients (no Sync yet) still get answers while a Bind waits', async () => {
  const id = await freshAccount();
  const app = `flush-${id}`;
  const wire = await login(app);
  // The PREPARE runs through the extended protocol; the Bind after it depends on its outcome and
  // the client sends no Sync or Flush until it has seen the result: the gateway must ask for it.
  wire.send([parseMessage('', `PREPARE fq (int) AS ${EVIL}`), bindMessage('', '', []), executeMessage(),
    bindMessage('', 'fq', [String(id)]), executeMessage(), frame('H')]);
  const got = await wire.readUntil((m) => m.type === 'C' && m.body.toString().startsWith('UPDATE'), 10_000);
  assert.ok(got.length > 0);
  wire.send([syncMessage()]);
  await wire.readUntilReady();
  wire.terminate();
  assert.equal(await balance(id), 1_000_000);
  const events = await sessionEvents(app);
  assert.match(String(executedText(events, 'fq')), /^PREPARE fq \(int\) AS update acct set balance = balance \+ 1000000/);
});

// EOF is queued behind held data (issue 11 item 2): a client that sends statements and closes at
// once (a script piped into a client, a driver's fire-and-forget) has them run on the target, as
// PostgreSQL itself runs what it read before the EOF; with Terminate, and without it.
for (const ending of ['terminate', 'eof'] as const) {
  test(`statements sent just before the client closes (${ending}) reach the target, and the record says they were sent`, async () => {
    const id = await freshAccount();
    const app = `close-after-send-${ending}`;
    const wire = await login(app);
    const batch = [
      queryMessage(`update acct set balance = balance + 1 where id = ${id}`),
      parseMessage('', 'update acct set balance = balance + $1 where id = $2'), bindMessage('', '', ['10', String(id)]), executeMessage(), syncMessage(),
      ...(ending === 'terminate' ? [frame('X')] : []),
    ];
    wire.socket.end(Buffer.concat(batch)); // one write, then FIN: the statements wait for their record, the EOF must wait too
    const events = await sessionEvents(app);
    assert.equal(await balance(id), 11, `both statements ran on the target: ${JSON.stringify(events.map((e) => [e.type, e.data.text ?? e.data.reason]))}`);
    const statements = events.filter((e) => e.type === 'query' || e.type === 'execute');
    assert.equal(statements.length, 2);
    for (const s of statements) assert.notEqual(resultOf(events, s.seq)?.notForwarded, 'client disconnected', 'not recorded as undelivered');
  });
}
