// Hostile and malformed input on the PostgreSQL listener. Every case checks three things: what the
// attacking client sees (a protocol-native ErrorResponse with the right SQLSTATE and then a
// closed connection, or just a close where the protocol leaves no room for a message), that the
// gateway is still up (a fresh client logs in and runs a query), and that a session opened before
// the attack is untouched (it answers a query afterwards). Sessions ended by a malformed frame must
// say so in their recording and keep every statement recorded before it.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { startPgCluster, type PgCluster } from '../support/pg-cluster.ts';
import { run } from '../support/processes.ts';
import { startTestGateway, type TestGateway } from '../support/gateway.ts';
import {
  PgWire, connectAndLogin, decodeAuthentication, decodeError, describeMessages, frame, gssencRequest, parseMessage,
  bindMessage, executeMessage, passwordMessage, queryMessage, rawHeader, sslRequest, startupPacket, syncMessage, untyped,
  summarize, type ErrorFields,
} from '../support/pg-wire.ts';
import type { EventView, SessionView } from '../../src/cli/format.ts';

const IDENTITY = 'mallory';
const CONNECTION = 'app';
const INT32_MAX = 2 ** 31 - 1;

let pg: PgCluster;
let gw: TestGateway;
let token: string;
/** Opened before the first attack and kept open across all of them. */
let bystander: PgWire;
let bystanderQueries = 0;
let appCounter = 0;

function appName(label: string): string {
  return `mal-${++appCounter}-${label}`;
}

function raw(): Promise<PgWire> {
  return PgWire.connect({ host: gw.pgHost, port: gw.pgPort });
}

async function login(app: string, opts: { tls?: boolean } = {}): Promise<PgWire> {
  const { wire } = await connectAndLogin({
    host: gw.pgHost, port: gw.pgPort, tls: opts.tls, user: IDENTITY, database: CONNECTION, password: token,
    params: { application_name: app },
  });
  return wire;
}

/** Reads everything until the gateway closes; expects exactly one ErrorResponse, and as the last message. */
async function expectErrorThenClose(w: PgWire, code: string | RegExp, what: string): Promise<ErrorFields> {
  const { messages } = await w.readUntilClosed(5_000).catch((err: Error) => {
    throw new Error(`${what}: the gateway did not close the connection: ${err.message}`);
  });
  const errors = messages.filter((m) => m.type === 'E');
  assert.equal(errors.length, 1, `${what}: expected one ErrorResponse, got: ${describeMessages(messages)}`);
  assert.equal(messages[messages.length - 1].type, 'E', `${what}: the ErrorResponse is the last message: ${describeMessages(messages)}`);
  assert.ok(!messages.some((m) => m.type === 'R' && decodeAuthentication(m.body) === 0), `${what}: no AuthenticationOk`);
  const e = decodeError(errors[0].body);
  if (typeof code === 'string') assert.equal(e.code, code, `${what}: SQLSTATE of ${JSON.stringify(e)}`);
  else assert.match(e.code, code, `${what}: SQLSTATE of ${JSON.stringify(e)}`);
  assert.equal(e.severity, 'FATAL', `${what}: a session-ending error is FATAL`);
  assert.ok(e.message.length > 0, `${what}: the error has a message`);
  return e;
}

function gatewayRssKb(): number {
  return Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${gw.process.pid}/status`, 'utf8'))![1]);
}

/** The gateway process is up, a new client logs in and queries, and the bystander still answers. */
async function assertGatewayHealthy(what: string): Promise<void> {
  assert.equal(gw.process.exitCode, null, `${what}: the gateway process exited`);
  assert.equal(gw.process.signalCode, null, `${what}: the gateway process was killed`);
  const n = ++bystanderQueries;
  const r = await bystander.query(`select ${n} as still_here`).catch((err: Error) => {
    throw new Error(`${what}: the session opened before the attack is broken: ${err.message}`);
  });
  assert.deepEqual(r.errors, [], `${what}: bystander query failed`);
  assert.deepEqual(r.rows, [[String(n)]], `${what}: bystander answer`);
  const fresh = await login(appName('fresh'));
  const f = await fresh.query('select 6 * 7 as answer');
  assert.deepEqual(f.rows, [['42']], `${what}: a new session after the attack works`);
  fresh.terminate();
}

async function listSessions(): Promise<SessionView[]> {
  return JSON.parse(await gw.cliOk(['sessions', 'list', '--json', '--limit', '10000'])) as SessionView[];
}

/** The recorded session of the connection that used this application_name, once it has ended. */
async function endedSession(app: string, timeoutMs = 10_000): Promise<SessionView> {
  const deadline = Date.now() + timeoutMs;
  let last: SessionView | undefined;
  for (;;) {
    last = (await listSessions()).find((s) => s.applicationName === app);
    if (last?.endReason) return last;
    if (Date.now() > deadline) throw new Error(`session of ${app} not ended in time: ${JSON.stringify(last)}`);
    await new Promise((r) => setTimeout(r, 150));
  }
}

async function eventsOf(id: string): Promise<EventView[]> {
  return (JSON.parse(await gw.cliOk(['sessions', 'show', id, '--json'])) as { events: EventView[] }).events;
}

function resultOf(events: EventView[], seq: number): Record<string, unknown> | undefined {
  return events.find((e) => e.type === 'result' && e.data.ref === seq)?.data;
}

async function backendAlive(pid: number): Promise<boolean> {
  return (await pg.sql(`select count(*) from pg_stat_activity where pid = ${pid}`)) === '1';
}

async function waitBackendGone(pid: number, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (await backendAlive(pid)) {
    if (Date.now() > deadline) throw new Error(`upstream backend ${pid} is still connected after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

before(async () => {
  pg = await startPgCluster();
  gw = await startTestGateway();
  token = await gw.setupPostgres({ identity: IDENTITY, connection: CONNECTION, cluster: pg });
  await pg.sql('create table malformed_probe (id int primary key, note text); grant all on malformed_probe to scram_user;', 'app');
  bystander = await login(appName('bystander'), { tls: true });
  const r = await bystander.query('select 1');
  assert.deepEqual(r.rows, [['1']]);
});

after(async () => {
  bystander?.destroy();
  await gw?.stop();
  await pg?.stop();
});

// ---- before authentication -------------------------------------------------------------------

test('random bytes as the first packet: 08P01 ErrorResponse, then close', async () => {
  for (let i = 0; i < 5; i++) {
    const garbage = randomBytes(512);
    // Keep the dice honest but away from the two first bytes that mean something else: 0x16 starts
    // a direct-TLS ClientHello and 0x00 a plausible startup length (the gateway would wait for it).
    while (garbage[0] === 0x00 || garbage[0] === 0x16) garbage[0] = randomBytes(1)[0];
    const w = await raw();
    w.send(garbage);
    await expectErrorThenClose(w, '08P01', `random bytes #${i} (${garbage.subarray(0, 4).toString('hex')}…)`);
  }
  // Another protocol spoken at the port: an HTTP request.
  const http = await raw();
  http.send(Buffer.from('GET / HTTP/1.1\r\nHost: gatehouse\r\n\r\n'));
  await expectErrorThenClose(http, '08P01', 'an HTTP request');
  await assertGatewayHealthy('random bytes');
});

test('garbage that starts like a TLS record (0x16): the connection closes without authentication', async () => {
  // A first byte 0x16 announces a direct-TLS ClientHello; a broken one cannot get a PostgreSQL
  // message back (the client would be reading TLS), so a close is the whole answer.
  const garbage = randomBytes(300);
  garbage[0] = 0x16;
  const w = await raw();
  w.send(garbage);
  const { messages } = await w.readUntilClosed(5_000).catch((err: Error) => {
    throw new Error(`the gateway kept a connection with a broken ClientHello open: ${err.message}`);
  });
  assert.ok(!messages.some((m) => m.type === 'R'), `no authentication: ${describeMessages(messages)}`);
  await assertGatewayHealthy('broken ClientHello');
});

test('direct TLS (sslnegotiation=direct): with ALPN "postgresql" the session works; without ALPN it is refused before authentication', async () => {
  const app = appName('direct-tls');
  const w = await PgWire.connect({ host: gw.pgHost, port: gw.pgPort, directTls: { alpn: ['postgresql'] } });
  await w.startup({ user: IDENTITY, database: CONNECTION, application_name: app }, token);
  assert.deepEqual((await w.query('select 5')).rows, [['5']]);
  w.terminate();
  assert.match((await endedSession(app)).endReason ?? '', /client (terminated|disconnected)/);

  const bare = await PgWire.connect({ host: gw.pgHost, port: gw.pgPort, directTls: {} });
  bare.send(startupPacket({ user: IDENTITY, database: CONNECTION }));
  const { messages } = await bare.readUntilClosed(5_000).catch((err: Error) => {
    throw new Error(`the gateway kept a direct-TLS connection without ALPN open: ${err.message}`);
  });
  assert.ok(!messages.some((m) => m.type === 'R'), `no authentication without ALPN: ${describeMessages(messages)}`);
  await assertGatewayHealthy('direct TLS');
});

for (const length of [0, 3]) {
  test(`startup packet with length ${length}: 08P01, then close`, async () => {
    const w = await raw();
    const packet = Buffer.alloc(8);
    packet.writeInt32BE(length, 0);
    packet.writeInt32BE(196608, 4);
    w.send(packet);
    await expectErrorThenClose(w, '08P01', `startup length ${length}`);
    await assertGatewayHealthy(`startup length ${length}`);
  });
}

test('startup packet with length 2^31-1: refused at once (08P01 or 54000), nothing is buffered', async () => {
  const w = await raw();
  const head = Buffer.alloc(8);
  head.writeInt32BE(INT32_MAX, 0);
  head.writeInt32BE(196608, 4);
  w.send(Buffer.concat([head, Buffer.from('user\0mallory\0database\0app\0\0')]));
  const started = Date.now();
  await expectErrorThenClose(w, /^(08P01|54000)$/, 'startup length 2^31-1');
  assert.ok(Date.now() - started < 3_000, 'the refusal does not wait for 2 GB that will never come');
  await assertGatewayHealthy('startup length 2^31-1');
});

test('unknown protocol version 2.0 (and 1234.5681): 0A000 "unsupported frontend protocol", then close', async () => {
  const w = await raw();
  w.send(startupPacket({ user: IDENTITY, database: CONNECTION }, 2 << 16));
  const e = await expectErrorThenClose(w, '0A000', 'protocol 2.0');
  assert.match(e.message, /unsupported frontend protocol 2\.0/);

  // The special codes live at major 1234; an unknown one must not be taken for a startup.
  const w2 = await raw();
  w2.send(untyped(Buffer.from([0x04, 0xd2, 0x16, 0x31]))); // 1234.5681
  const e2 = await expectErrorThenClose(w2, '0A000', 'protocol 1234.5681');
  assert.match(e2.message, /unsupported frontend protocol 1234\.5681/);
  await assertGatewayHealthy('unknown protocol version');
});

test('a newer 3.x minor version is negotiated down with NegotiateProtocolVersion and the session works', async () => {
  const app = appName('proto-3.9');
  const w = await raw();
  const started = await w.startup({ user: IDENTITY, database: CONNECTION, application_name: app, '_pq_.x_test': 'on' }, token, { version: (3 << 16) | 9 });
  const v = started.messages.find((m) => m.type === 'v');
  assert.ok(v, `NegotiateProtocolVersion expected: ${describeMessages(started.messages)}`);
  assert.equal(v.body.readInt32BE(0), 3 << 16, 'the newest version the gateway supports is 3.0');
  assert.equal(v.body.readInt32BE(4), 1, 'one unsupported protocol option');
  assert.equal(v.body.toString('utf8', 8, v.body.indexOf(0, 8)), '_pq_.x_test');
  const r = await w.query('select 1 as negotiated');
  assert.deepEqual(r.rows, [['1']]);
  w.terminate();
  const s = await endedSession(app);
  assert.equal(s.endReason, 'client terminated');
});

test('SSLRequest followed by plaintext before the TLS handshake is refused (CVE-2021-23214)', async () => {
  // Bytes that arrive together with the SSLRequest would be injected into the TLS session as if
  // the client had sent them encrypted: PostgreSQL refuses them, and so must the gateway.
  const w = await raw();
  w.send(Buffer.concat([sslRequest(), startupPacket({ user: IDENTITY, database: CONNECTION })]));
  const first = await w.peekByte(5_000);
  assert.notEqual(first, 0x53, 'the gateway must not accept TLS ("S") when plaintext follows the SSLRequest');
  await expectErrorThenClose(w, '08P01', 'SSLRequest + injected plaintext');

  // Also injected: a whole simple Query behind the startup (the classic attack shape).
  const w2 = await raw();
  w2.send(Buffer.concat([sslRequest(), startupPacket({ user: IDENTITY, database: CONNECTION }), passwordMessage(token), queryMessage('select 1')]));
  assert.notEqual(await w2.peekByte(5_000), 0x53);
  await expectErrorThenClose(w2, '08P01', 'SSLRequest + injected startup, password and query');
  await assertGatewayHealthy('SSLRequest + plaintext');
});

test('after "S", plaintext instead of a TLS ClientHello: the connection closes without authentication', async () => {
  const w = await raw();
  w.send(sslRequest());
  assert.equal(await w.readByte(5_000), 0x53, 'the gateway accepts TLS');
  w.send(startupPacket({ user: IDENTITY, database: CONNECTION }));
  const { messages } = await w.readUntilClosed(5_000).catch((err: Error) => {
    throw new Error(`the gateway did not close a connection that failed its TLS handshake: ${err.message}`);
  });
  // The TLS layer may answer with an alert or nothing; an ErrorResponse is fine. Authentication never.
  assert.ok(!messages.some((m) => m.type === 'R'), `no authentication exchange over a failed TLS handshake: ${describeMessages(messages)}`);
  await assertGatewayHealthy('plaintext after S');
});

test('GSSENCRequest is declined with the single byte "N", then a normal startup works on the same connection', async () => {
  const app = appName('gssenc');
  const w = await raw();
  w.send(gssencRequest());
  assert.equal(await w.readByte(5_000), 0x4e, 'the answer is "N"');
  assert.equal(w.unreadBytes, 0, 'nothing but the single byte');
  await w.startup({ user: IDENTITY, database: CONNECTION, application_name: app }, token);
  const r = await w.query("select 'after gssenc' as t");
  assert.deepEqual(r.rows, [['after gssenc']]);
  w.terminate();

  // libpq with gssencmode=prefer and sslmode=require: GSSENC declined, then SSLRequest on the same socket.
  const app2 = appName('gssenc-then-tls');
  const w2 = await raw();
  w2.send(gssencRequest());
  assert.equal(await w2.readByte(5_000), 0x4e);
  await w2.startTls();
  await w2.startup({ user: IDENTITY, database: CONNECTION, application_name: app2 }, token);
  assert.deepEqual((await w2.query('select 2')).rows, [['2']]);
  w2.terminate();

  const events = await eventsOf((await endedSession(app)).id);
  assert.ok(events.some((e) => e.type === 'query' && e.data.text === "select 'after gssenc' as t"), 'the query after the declined GSSENC is recorded');
  assert.equal((await endedSession(app2)).endReason, 'client terminated');
});

test('GSSENCRequest followed by extra bytes is refused like the SSLRequest case', async () => {
  const w = await raw();
  w.send(Buffer.concat([gssencRequest(), startupPacket({ user: IDENTITY, database: CONNECTION })]));
  await expectErrorThenClose(w, '08P01', 'GSSENCRequest + injected plaintext');
  await assertGatewayHealthy('GSSENCRequest + plaintext');
});

test('clients that connect and send nothing (or half a startup packet) do not hold up anyone else', async () => {
  const silent: PgWire[] = [];
  for (let i = 0; i < 40; i++) silent.push(await raw());
  const half = await raw();
  const partial = startupPacket({ user: IDENTITY, database: CONNECTION });
  half.send(partial.subarray(0, 10));
  const started = Date.now();
  await assertGatewayHealthy('silent clients');
  assert.ok(Date.now() - started < 5_000, `a new session took ${Date.now() - started} ms while silent clients were connected`);
  // The gateway has not answered them anything: they owe it the first packet.
  for (const w of [...silent, half]) assert.equal(w.bytesReceived, 0, 'nothing is sent to a client that has not spoken');
  for (const w of [...silent, half]) w.destroy();
  await assertGatewayHealthy('silent clients gone');
});

// ---- during authentication -------------------------------------------------------------------

for (const [label, length, code] of [['0', 0, '08P01'], ['3', 3, '08P01'], ['2^31-1', INT32_MAX, '54000']] as const) {
  test(`password message with length ${label}: ${code}, then close`, async () => {
    const w = await raw();
    w.send(startupPacket({ user: IDENTITY, database: CONNECTION }));
    const req = await w.next(5_000);
    assert.equal(req.type, 'R');
    assert.equal(decodeAuthentication(req.body), 3, 'cleartext password request');
    w.send(rawHeader('p', length));
    await expectErrorThenClose(w, code, `password length ${label}`);
    await assertGatewayHealthy(`password length ${label}`);
  });
}

// ---- after authentication --------------------------------------------------------------------

interface RecordedRun { app: string; pid: number; events: EventView[]; session: SessionView }

/** Logs in, runs a statement that is recorded, sends `attack`, and returns what the recording holds. */
async function attackAfterLogin(label: string, attack: Buffer, expected: string | RegExp, opts: { tls?: boolean } = {}): Promise<RecordedRun & { error: ErrorFields }> {
  const app = appName(label);
  const w = await login(app, opts);
  const ok = await w.query(`select '${label}' as before_attack`);
  assert.deepEqual(ok.rows, [[label]]);
  w.send(attack);
  const error = await expectErrorThenClose(w, expected, label);
  const session = await endedSession(app);
  const events = await eventsOf(session.id);
  const start = events.find((e) => e.type === 'session.start')!;
  const pid = Number((start.data.upstream as { pid: number }).pid);
  return { app, pid, events, session, error };
}

function assertStatementKept(run: RecordedRun, text: string, tag: string): void {
  const q = run.events.find((e) => e.type === 'query' && e.data.text === text);
  assert.ok(q, `the statement before the violation is still recorded: ${JSON.stringify(run.events.map((e) => e.type))}`);
  const r = resultOf(run.events, q.seq);
  assert.ok(r, 'and its outcome');
  assert.equal(r.tag, tag);
  const end = run.events[run.events.length - 1];
  assert.equal(end.type, 'session.end', 'session.end is the last event');
  assert.equal(end.data.reason, run.session.endReason);
}

for (const [label, length, code] of [['0', 0, '08P01'], ['3', 3, '08P01'], ['2^31-1', INT32_MAX, '54000']] as const) {
  test(`after authentication, a typed message with length ${label}: ${code}, then close; recorded as a protocol violation`, async () => {
    const run = await attackAfterLogin(`len-${label}`, rawHeader('Q', length), code);
    assert.match(run.session.endReason ?? '', /protocol violation/i, `end reason: ${run.session.endReason}`);
    assert.match(run.session.endReason ?? '', length === INT32_MAX ? /exceeds|too large|limit/i : /invalid message length/i);
    assertStatementKept(run, `select 'len-${label}' as before_attack`, 'SELECT 1');
    await waitBackendGone(run.pid); // a backend that saw half a conversation is never pooled
    await assertGatewayHealthy(`typed message length ${label}`);
  });
}

test('after authentication over TLS, a typed message with length 2^31-1: 54000 over the TLS stream', async () => {
  const run = await attackAfterLogin('tls-huge', rawHeader('P', INT32_MAX), '54000', { tls: true });
  assert.match(run.session.endReason ?? '', /protocol violation/i);
  assertStatementKept(run, "select 'tls-huge' as before_attack", 'SELECT 1');
  await assertGatewayHealthy('TLS typed message length 2^31-1');
});

test('after authentication, a CopyData frame claiming 2^31-1 bytes outside COPY: 08P01 or 54000, then close; recorded as a protocol violation', async () => {
  // CopyData is the one frame type the gateway streams instead of buffering (for COPY FROM STDIN);
  // outside COPY it is as oversized as any other 2 GB frame.
  const run = await attackAfterLogin('copydata-huge', Buffer.concat([rawHeader('d', INT32_MAX), Buffer.alloc(64)]), /^(08P01|54000)$/);
  assert.match(run.session.endReason ?? '', /protocol violation/i, `end reason: ${run.session.endReason}`);
  assertStatementKept(run, "select 'copydata-huge' as before_attack", 'SELECT 1');
  await waitBackendGone(run.pid);
  await assertGatewayHealthy('CopyData 2^31-1 outside COPY');
});

test('during COPY FROM STDIN, a CopyData frame claiming 2^31-1 bytes: the session ends with an error, nothing is committed, no phantom bytes are recorded', async () => {
  const app = appName('copy-huge-frame');
  const w = await login(app);
  w.send(queryMessage('COPY malformed_probe (id, note) FROM STDIN'));
  assert.equal((await w.next()).type, 'G', 'CopyInResponse');
  const good = Buffer.from('100\tgood row\n');
  const tail = Buffer.from('101\tafter the huge header\n');
  // 1 GB - 1 is PostgreSQL's own limit for a CopyData message; this one claims 2 GB and sends a line.
  w.send([frame('d', good), rawHeader('d', INT32_MAX), tail]);
  const { messages } = await w.readUntilClosed(5_000);
  const errors = messages.filter((m) => m.type === 'E').map((m) => decodeError(m.body));
  assert.ok(errors.length >= 1, `the client is told: ${describeMessages(messages)}`);
  assert.match(errors[errors.length - 1].code, /^(08P01|54000)$/, describeMessages(messages));
  assert.ok(!messages.some((m) => m.type === 'C'), 'the COPY does not complete');
  assert.equal(await pg.sql('select count(*) from malformed_probe where id in (100, 101)', 'app'), '0');

  const s = await endedSession(app);
  const events = await eventsOf(s.id);
  const copy = events.find((e) => e.type === 'query' && String(e.data.text).startsWith('COPY'));
  assert.ok(copy);
  const r = resultOf(events, copy.seq);
  assert.ok(r, 'the COPY has an outcome');
  assert.ok(r.incomplete || r.error, `the COPY is recorded as failed or incomplete: ${JSON.stringify(r)}`);
  const sentBytes = good.length + tail.length;
  assert.ok(Number(r.copyBytes ?? 0) <= sentBytes,
    `the recording claims ${String(r.copyBytes)} bytes were copied; the client sent ${sentBytes} bytes of CopyData`);
  await assertGatewayHealthy('CopyData 2^31-1 during COPY');
});

test('after authentication, an unknown message type: 08P01, then close; the error is in the recording', async () => {
  const app = appName('unknown-type');
  const w = await login(app);
  await w.query("select 'before unknown type'");
  w.send(frame('z', Buffer.from('what is this\0')));
  const e = await expectErrorThenClose(w, '08P01', 'unknown message type');
  assert.match(e.message, /invalid frontend message type|unknown|unexpected/i);
  const s = await endedSession(app);
  const events = await eventsOf(s.id);
  assert.ok(events.some((x) => x.type === 'query' && x.data.text === "select 'before unknown type'"));
  const recorded = events.filter((x) => (x.type === 'error' && x.data.code === '08P01') || (x.type === 'session.end' && /protocol/i.test(String(x.data.reason))));
  assert.ok(recorded.length > 0, `the 08P01 is recorded: ${JSON.stringify(events.slice(-3))}`);
  await assertGatewayHealthy('unknown message type');
});

test('a malformed message body (Bind with a negative parameter length): 08P01 and the earlier statements stay recorded', async () => {
  const app = appName('bad-bind');
  const w = await login(app);
  // A complete extended-protocol round first, with a parameter.
  w.send([parseMessage('s1', 'select $1::int + 1 as n'), bindMessage('', 's1', ['41']), executeMessage(), syncMessage()]);
  const first = summarize(await w.readUntilReady());
  assert.deepEqual(first.rows, [['42']]);
  await w.query("insert into malformed_probe values (1, 'before the bad frame')");
  // Bind whose only parameter claims length -5.
  const body = Buffer.concat([Buffer.from('\0s1\0'), Buffer.from([0, 0, 0, 1]), Buffer.from([0xff, 0xff, 0xff, 0xfb]), Buffer.from([0, 0])]);
  w.send([frame('B', body), executeMessage(), syncMessage()]);
  const { messages } = await w.readUntilClosed(5_000);
  const errors = messages.filter((m) => m.type === 'E').map((m) => decodeError(m.body));
  assert.equal(errors.length, 1, describeMessages(messages));
  assert.equal(errors[0].code, '08P01', JSON.stringify(errors[0]));
  assert.equal(messages[messages.length - 1].type, 'E', 'nothing after the error');

  const s = await endedSession(app);
  assert.match(s.endReason ?? '', /protocol violation/i);
  const events = await eventsOf(s.id);
  const exec = events.find((e) => e.type === 'execute');
  assert.ok(exec, 'the execute before the bad frame is recorded');
  assert.deepEqual(exec.data.params, ['41']);
  assert.equal(resultOf(events, exec.seq)?.tag, 'SELECT 1');
  const ins = events.find((e) => e.type === 'query' && String(e.data.text).startsWith('insert into malformed_probe'));
  assert.ok(ins);
  assert.equal(resultOf(events, ins.seq)?.tag, 'INSERT 0 1');
  assert.equal(await pg.sql('select note from malformed_probe where id = 1', 'app'), 'before the bad frame');
  await assertGatewayHealthy('bad Bind');
});

test('a valid statement and a bad header in the same packet: the statement is recorded with an outcome, the session ends 08P01', async () => {
  const app = appName('same-packet');
  const w = await login(app);
  w.send([queryMessage("insert into malformed_probe values (2, 'same packet')"), rawHeader('Q', 0)]);
  const { messages } = await w.readUntilClosed(5_000);
  const errors = messages.filter((m) => m.type === 'E').map((m) => decodeError(m.body));
  assert.ok(errors.some((e) => e.code === '08P01' && e.severity === 'FATAL'), describeMessages(messages));
  const s = await endedSession(app);
  assert.match(s.endReason ?? '', /protocol violation/i);
  const events = await eventsOf(s.id);
  const q = events.find((e) => e.type === 'query');
  assert.ok(q, 'the statement that arrived with the bad header is recorded');
  const r = resultOf(events, q.seq);
  assert.ok(r, 'with an outcome (executed, or marked incomplete)');
  // What the recording says happened must be what happened in the database.
  const rows = await pg.sql('select count(*) from malformed_probe where id = 2', 'app');
  if (r.tag === 'INSERT 0 1') assert.equal(rows, '1', 'recorded as executed, so the row exists');
  else {
    assert.ok(r.incomplete, `not executed, so marked incomplete: ${JSON.stringify(r)}`);
    assert.equal(rows, '0', 'recorded as incomplete: the insert must not have run');
  }
  await assertGatewayHealthy('statement + bad header');
});

test('a truncated message, then the client closes: no reply is possible, the session ends "client disconnected", the backend is not reused', async () => {
  for (const [label, tail] of [
    ['body', Buffer.concat([rawHeader('Q', 100), Buffer.from("select 'never")])],
    ['header', Buffer.from([0x51, 0x00, 0x00])],
  ] as const) {
    const app = appName(`truncated-${label}`);
    const w = await login(app);
    await w.query("select 'before truncation'");
    await w.sendAndFlush(tail);
    await new Promise((r) => setTimeout(r, 100));
    w.end();
    const { messages } = await w.readUntilClosed(5_000);
    assert.deepEqual(messages.map((m) => m.type), [], `truncated ${label}: the gateway has nothing to answer: ${describeMessages(messages)}`);
    const s = await endedSession(app);
    assert.equal(s.endReason, 'client disconnected', `truncated ${label}`);
    const events = await eventsOf(s.id);
    const queries = events.filter((e) => e.type === 'query').map((e) => e.data.text);
    assert.deepEqual(queries, ["select 'before truncation'"], 'the truncated statement is not recorded as a statement');
    assert.equal(resultOf(events, events.find((e) => e.type === 'query')!.seq)?.tag, 'SELECT 1');
    // The upstream saw part of a message: it must be closed, never handed to the next client.
    const pid = Number((events[0].data.upstream as { pid: number }).pid);
    await waitBackendGone(pid);
  }
  // And the next client on the same pool key gets a clean backend.
  const w = await login(appName('truncated-body'));
  assert.deepEqual((await w.query('select 1')).rows, [['1']]);
  w.terminate();
  await assertGatewayHealthy('truncated message');
});

test('the recording of a session ended by a malformed frame keeps its statements and names the violation', async () => {
  const app = appName('recorded-violation');
  const w = await login(app);
  await w.query("select 'first statement' as a");
  w.send([parseMessage('', 'select $1::text as b'), bindMessage('', '', ['second statement']), executeMessage(), syncMessage()]);
  await w.readUntilReady();
  await w.query("insert into malformed_probe values (3, 'third statement')");
  w.send(rawHeader('X', 0)); // a Terminate whose length is invalid
  await expectErrorThenClose(w, '08P01', 'Terminate with length 0');

  const s = await endedSession(app);
  assert.match(s.endReason ?? '', /^client protocol violation: .*invalid message length 0/);
  const events = await eventsOf(s.id);
  const statements = events.filter((e) => e.type === 'query' || e.type === 'execute');
  assert.deepEqual(statements.map((e) => e.data.text), [
    "select 'first statement' as a", 'select $1::text as b', "insert into malformed_probe values (3, 'third statement')",
  ]);
  assert.deepEqual(statements[1].data.params, ['second statement']);
  assert.deepEqual(statements.map((e) => resultOf(events, e.seq)?.tag), ['SELECT 1', 'SELECT 1', 'INSERT 0 1']);
  assert.deepEqual(resultOf(events, statements[1].seq)?.sample, [['second statement']]);
  const seqs = events.map((e) => e.seq);
  assert.deepEqual(seqs, seqs.map((_, i) => i), 'no event is missing from the sequence');
  const end = events[events.length - 1];
  assert.equal(end.type, 'session.end');
  assert.equal(end.data.reason, s.endReason);
  await assertGatewayHealthy('recorded violation');
});

test('the gateway is still up and the bystander session still answers after every attack', async () => {
  await assertGatewayHealthy('end of file');
  assert.ok(bystanderQueries > 10, 'the bystander was exercised across the attacks');
  const s = (await listSessions()).find((x) => x.applicationName.endsWith('-bystander'));
  assert.ok(s, 'the bystander session is recorded');
  assert.equal(s.endReason, null, 'and still open');
  const events = await eventsOf(s.id);
  assert.equal(events.filter((e) => e.type === 'query').length, bystanderQueries + 1);
  assert.ok(!gw.logs().includes(token), 'the token never appears in the log');
});

test('a whole statement over the message limit (sent in full, still streaming): the client reads 54000 before the close', async () => {
  const app = appName('oversized-full');
  const w = await login(app);
  // 80 MiB of Query text, over the 64 MiB default, written at once: the gateway refuses at the
  // header while the rest keeps arriving; the error must not be lost to a connection reset.
  const body = Buffer.alloc(80 * 1024 * 1024, 0x20);
  body.write('select 1', 0);
  body[body.length - 1] = 0;
  w.socket.on('error', () => {});
  w.send(frame('Q', body));
  const e = await expectErrorThenClose(w, '54000', 'oversized Query');
  assert.match(e.message, /message|large|limit/i);
  await assertGatewayHealthy('oversized Query sent in full');
});

test('psql sending a statement over the message limit prints the gateway\'s 54000 error', async () => {
  const app = appName('oversized-psql');
  const sql = `select '${'x'.repeat(80 * 1024 * 1024)}' as big;\n`;
  const r = await run('psql', [gw.dsn(CONNECTION, IDENTITY, `application_name=${app}`), '-X', '-f', '-'], {
    env: { ...process.env, PGPASSWORD: token }, input: sql, timeoutMs: 60_000,
  });
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /FATAL: {2}.*(message|large|limit)/i, r.stderr);
  await assertGatewayHealthy('oversized statement from psql');
});

test('a client that floods bytes while the gateway is still logging in to the target is cut off with 54000; nothing is buffered', async () => {
  // A target that accepts the connection and never answers: the gateway waits in its login while
  // the client keeps sending. Every byte used to be buffered (and re-copied) until then.
  const blackhole = net.createServer((sock) => { sock.on('error', () => {}); sock.on('data', () => {}); });
  await new Promise<void>((r) => blackhole.listen(0, '127.0.0.1', () => r()));
  try {
    const port = (blackhole.address() as net.AddressInfo).port;
    const floodToken = await gw.setupPostgres({ identity: 'flooder', connection: 'slow-target', cluster: { host: '127.0.0.1', port } as PgCluster, password: 'x', sslmode: 'disable' });
    const rssBefore = gatewayRssKb();
    const flooders: PgWire[] = [];
    for (let i = 0; i < 4; i++) {
      const w = await raw();
      w.socket.on('error', () => {});
      w.send(startupPacket({ user: 'flooder', database: 'slow-target' }));
      const req = await w.next(5_000);
      assert.equal(decodeAuthentication(req.body), 3);
      w.send(passwordMessage(floodToken));
      w.send(Buffer.alloc(48 * 1024 * 1024, 0x51));
      flooders.push(w);
    }
    const started = Date.now();
    for (const w of flooders) {
      const { messages } = await w.readUntilClosed(20_000);
      const err = messages.find((m) => m.type === 'E');
      assert.ok(err, describeMessages(messages));
      assert.equal(decodeError(err.body).code, '54000', JSON.stringify(decodeError(err.body)));
    }
    assert.ok(Date.now() - started < 8_000, `cut off after ${Date.now() - started} ms, not at the login timeout`);
    assert.ok(gatewayRssKb() - rssBefore < 100 * 1024, `gateway RSS grew by ${gatewayRssKb() - rssBefore} kB`);
    await assertGatewayHealthy('flood during the upstream login');
  } finally {
    blackhole.close();
  }
});
