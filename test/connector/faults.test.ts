// Connector faults, with the connector as a separate process: kill -9 mid-query (the client gets a
// protocol-native FATAL, the recording says why, the gateway stays up, a restart from the data
// directory brings sessions back), and two connectors serving one connection with one killed.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { startPgCluster, type PgCluster } from '../support/pg-cluster.ts';
import { startTestGateway, type TestGateway } from '../support/gateway.ts';
import { run, type RunResult } from '../support/processes.ts';
import { connectAndLogin, decodeError, PgServerError, queryMessage, type ErrorFields, type PgWire, type WireMessage } from '../support/pg-wire.ts';
import {
  addViaConnection, enrollConnector, getRecording, listConnectors, listSessions, pgEnv, sessionIds, waitForConnectorStatus, waitForNewSessions,
  type ConnectorProcess,
} from '../support/connector.ts';

let cluster: PgCluster;
let gw: TestGateway;
let token: string;
const connectors: ConnectorProcess[] = [];

before(async () => {
  cluster = await startPgCluster();
  gw = await startTestGateway();
  token = await gw.setupPostgres({ identity: 'bob', connection: 'direct', cluster });
});

after(async () => {
  for (const c of connectors) await c.kill('SIGKILL');
  await gw?.stop();
  await cluster?.stop();
});

const target = (): string => `${cluster.host}:${cluster.port}`;

function login(database: string): Promise<{ wire: PgWire }> {
  return connectAndLogin({ host: gw.pgHost, port: gw.pgPort, user: 'bob', database, password: token, timeoutMs: 10_000 });
}

function psql(connection: string, sql: string): Promise<RunResult> {
  return run('psql', [gw.dsn(connection, 'bob'), '-X', '-w', '-Atc', sql], { env: pgEnv({ PGPASSWORD: token }), timeoutMs: 30_000 });
}

/** The FATAL the client got before the connection closed, and whether the stream stayed well-framed. */
async function fatalOnClose(wire: PgWire, timeoutMs = 10_000): Promise<{ fatal: ErrorFields; messages: WireMessage[]; trailing: number }> {
  const closed = await wire.readUntilClosed(timeoutMs);
  const errors = closed.messages.filter((m) => m.type === 'E').map((m) => decodeError(m.body));
  const fatal = errors.find((e) => e.severity === 'FATAL');
  const types = closed.messages.map((m) => m.type).join('');
  assert.ok(fatal, `a FATAL ErrorResponse before the close; got ${closed.messages.length} messages (…${types.slice(-20)}), ` +
    `${closed.trailing} bytes of an incomplete message at the end, errors ${JSON.stringify(errors)}`);
  return { fatal, messages: closed.messages, trailing: closed.trailing };
}

async function waitForBackend(pattern: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (Number(await cluster.sql(`select count(*) from pg_stat_activity where query like '${pattern}' and state = 'active'`)) === 0) {
    if (Date.now() > deadline) throw new Error(`no backend runs ${pattern}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

test('kill -9 of the connector mid-query: FATAL 08006 naming the connector, recorded reason, gateway stays up, list shows disconnected', async () => {
  let connector = await enrollConnector(gw, 'k1', [target()]);
  connectors.push(connector);
  await addViaConnection(gw, { name: 'via_k1', via: ['k1'], host: cluster.host, port: cluster.port, identity: 'bob' });
  assert.equal((await psql('via_k1', 'select 1')).stdout.trim(), '1');
  const credential = path.join(connector.dataDir, 'connector.json');
  assert.ok(existsSync(credential), 'the connector keeps its credential in its data directory');

  const beforeIds = await sessionIds(gw, { connection: 'via_k1' });
  const { wire } = await login('via_k1');
  wire.send(queryMessage('select pg_sleep(5)'));
  await waitForBackend('select pg_sleep%');
  const killedAt = Date.now();
  await connector.kill('SIGKILL');

  const { fatal, trailing } = await fatalOnClose(wire);
  const elapsed = Date.now() - killedAt;
  assert.equal(fatal.code, '08006', `SQLSTATE connection_failure: ${JSON.stringify(fatal)}`);
  assert.match(`${fatal.message} ${fatal.detail ?? ''}`, /connector k1/);
  assert.match(`${fatal.message} ${fatal.detail ?? ''}`, /lost|disconnected/);
  assert.equal(trailing, 0, 'no partial message before the error');
  assert.ok(elapsed < 4000, `the client learns at once (${elapsed} ms), not when pg_sleep would have ended`);

  const [sess] = await waitForNewSessions(gw, beforeIds, 1, { connection: 'via_k1' });
  assert.match(sess.endReason ?? '', /connector k1 disconnected/, `recorded end reason: ${sess.endReason}`);
  const rec = await getRecording(gw, sess.id);
  const stmt = rec.events.find((e) => e.type === 'query' && e.data.text === 'select pg_sleep(5)');
  assert.ok(stmt, 'the interrupted statement is recorded');
  const result = rec.events.find((e) => e.type === 'result' && e.data.ref === stmt.seq);
  assert.ok(result, 'the interrupted statement has an outcome');
  assert.match(String(result.data.incomplete), /connector k1 disconnected/, `outcome: ${JSON.stringify(result.data)}`);
  assert.equal(rec.events.at(-1)?.type, 'session.end');

  // The gateway is still up and serves other connections.
  assert.equal(gw.process.exitCode, null, 'the gateway process is alive');
  assert.equal((await psql('direct', 'select 2')).stdout.trim(), '2');
  const down = await waitForConnectorStatus(gw, 'k1', 'disconnected');
  assert.equal(down.tunnels, 0);

});

test('while the connection\'s only connector is down, a new session is refused with 08006 that names the missing connector', async () => {
  const k1 = connectors.at(-1)!;
  await k1.kill('SIGKILL');
  await waitForConnectorStatus(gw, 'k1', 'disconnected');
  const beforeIds = await sessionIds(gw, { connection: 'via_k1' });
  let refusal: PgServerError | undefined;
  await assert.rejects(login('via_k1'), (err: unknown) => {
    assert.ok(err instanceof PgServerError, String(err));
    assert.equal(err.fields.severity, 'FATAL');
    assert.equal(err.fields.code, '08006');
    refusal = err;
    return true;
  });
  const [refused] = await waitForNewSessions(gw, beforeIds, 1, { connection: 'via_k1' });
  assert.match(refused.endReason ?? '', /no connector of k1 is connected/, `recorded refusal: ${refused.endReason}`);
  // Last, so the checks above run either way: the client itself is told that a connector is missing.
  assert.match(`${refusal!.fields.message} ${refusal!.fields.detail ?? ''}`, /connector/, `the client is told a connector is missing: ${refusal!.message} / detail: ${refusal!.fields.detail}`);
});

test('restarted from its data directory without a token, the connector is back and sessions work again', async () => {
  let connector = connectors.at(-1)!;
  assert.equal(connector.name, 'k1');
  await connector.kill('SIGKILL');
  connector = await connector.restart();
  connectors.push(connector);
  assert.ok(!connector.options.token, 'restarted without --token');
  assert.doesNotMatch(connector.logs(), /"msg":"enrolled"/, 'no second enrollment');
  const up = await waitForConnectorStatus(gw, 'k1', 'connected');
  assert.equal(up.version, '0.1.0');
  assert.deepEqual(up.allow, [target()]);
  assert.equal((await psql('via_k1', 'select 3')).stdout.trim(), '3');
  const { wire: again } = await login('via_k1');
  assert.deepEqual((await again.queryOk('select 4')).rows, [['4']]);
  again.terminate();
});

test('kill -9 of the connector while a large result streams: the client gets whole messages, then FATAL 08006', async () => {
  let connector = connectors.at(-1)!;
  assert.equal(connector.name, 'k1');
  if (!connector.running) {
    connector = await connector.restart();
    connectors.push(connector);
  }
  await waitForConnectorStatus(gw, 'k1', 'connected');
  const beforeIds = await sessionIds(gw, { connection: 'via_k1' });
  const { wire } = await login('via_k1');
  wire.send(queryMessage("select g, repeat('x', 2000) from generate_series(1, 200000) g"));
  // Read a little of it, then stop reading so the rest is in flight between target and client.
  await wire.next(10_000);
  wire.pause();
  await waitForBackend('select g, repeat%');
  await connector.kill('SIGKILL');
  wire.resume();
  const { fatal, messages, trailing } = await fatalOnClose(wire, 20_000);
  assert.equal(fatal.code, '08006');
  assert.match(`${fatal.message} ${fatal.detail ?? ''}`, /connector k1/);
  assert.equal(trailing, 0, 'no truncated message left over');
  assert.ok(messages.filter((m) => m.type === 'D').length < 200_000, 'the result was cut short');
  assert.equal(messages.at(-1)?.type, 'E', 'the error is the last thing the client gets');
  const [sess] = await waitForNewSessions(gw, beforeIds, 1, { connection: 'via_k1' });
  assert.match(sess.endReason ?? '', /connector k1 disconnected/);

  connector = await connector.restart();
  connectors.push(connector);
  await waitForConnectorStatus(gw, 'k1', 'connected');
  assert.equal((await psql('via_k1', 'select 5')).stdout.trim(), '5');
});

test('connector list shows disconnected after a kill and connected after the restart', async () => {
  let connector = connectors.at(-1)!;
  if (!connector.running) {
    connector = await connector.restart();
    connectors.push(connector);
  }
  await waitForConnectorStatus(gw, 'k1', 'connected');
  await connector.kill('SIGKILL');
  const down = await waitForConnectorStatus(gw, 'k1', 'disconnected', 10_000);
  assert.equal(down.address, null);
  const next = await connector.restart();
  connectors.push(next);
  const up = await waitForConnectorStatus(gw, 'k1', 'connected');
  assert.ok(up.address, 'the address of the live tunnel is listed');
  assert.ok(up.lastSeen, 'last seen is set');
});

test('two connectors serve one connection; kill -9 one: its sessions end with 08006, the others keep working, new sessions work', async () => {
  const a = await enrollConnector(gw, 'pair-a', [target()]);
  const b = await enrollConnector(gw, 'pair-b', [target()]);
  connectors.push(a, b);
  await addViaConnection(gw, { name: 'via_pair', via: ['pair-a', 'pair-b'], host: cluster.host, port: cluster.port, identity: 'bob' });

  // Several sessions at once, so the gateway opens several streams over the two tunnels.
  const open: PgWire[] = [];
  for (let i = 0; i < 8; i++) {
    const { wire } = await login('via_pair');
    await wire.queryOk('select 1');
    open.push(wire);
  }
  const listed = await listConnectors(gw);
  const streams = (n: string): number => listed.find((c) => c.name === n)?.openStreams ?? 0;
  assert.equal(streams('pair-a') + streams('pair-b'), 8, `open streams: ${JSON.stringify(listed)}`);
  const victim = streams('pair-a') > 0 ? a : b;
  const survivor = victim === a ? b : a;
  const victimStreams = streams(victim.name);

  const beforeIds = await sessionIds(gw, { connection: 'via_pair' });
  await victim.kill('SIGKILL');

  // New sessions right away: all of them work, through the survivor.
  for (let i = 0; i < 10; i++) {
    const r = await psql('via_pair', `select ${i}`);
    assert.equal(r.code, 0, `session ${i} after the kill: ${r.stderr}`);
    assert.equal(r.stdout.trim(), String(i));
  }
  const concurrent = await Promise.all(Array.from({ length: 4 }, (_, i) => psql('via_pair', `select 100 + ${i}`)));
  assert.deepEqual(concurrent.map((r) => r.stdout.trim()), ['100', '101', '102', '103'], concurrent.map((r) => r.stderr).join(''));

  // The sessions that were open: those on the victim got a FATAL naming it, the others still answer.
  let died = 0;
  for (const wire of open) {
    wire.send(queryMessage('select 42'));
    const msgs = await wire.readUntil((m) => m.type === 'Z' || m.type === 'E', 10_000).catch(() => [] as WireMessage[]);
    const err = msgs.find((m) => m.type === 'E');
    if (err) {
      const f = decodeError(err.body);
      assert.equal(f.code, '08006', JSON.stringify(f));
      assert.match(`${f.message} ${f.detail ?? ''}`, new RegExp(`connector ${victim.name}`));
      died++;
    } else {
      assert.ok(msgs.some((m) => m.type === 'D'), `a surviving session answers: ${msgs.map((m) => m.type).join('')}`);
      wire.terminate();
    }
  }
  assert.equal(died, victimStreams, 'exactly the sessions carried by the killed connector ended');
  const ended = (await listSessions(gw, { connection: 'via_pair' })).filter((s) => s.endedAt !== null && /connector/.test(s.endReason ?? ''));
  assert.equal(ended.length, victimStreams);
  assert.ok(ended.every((s) => s.endReason!.includes(`connector ${victim.name} disconnected`)), JSON.stringify(ended.map((s) => s.endReason)));
  await waitForNewSessions(gw, beforeIds, 14, { connection: 'via_pair' });
  assert.equal((await listConnectors(gw)).find((c) => c.name === survivor.name)?.status, 'connected');
  assert.equal((await listConnectors(gw)).find((c) => c.name === victim.name)?.status, 'disconnected');
});
