// Two gateways sharing one PostgreSQL store: each keeps its own seal log, both record, and the
// store verifies as a whole against both gateways' keys.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { startPgCluster, type PgCluster } from '../support/pg-cluster.ts';
import { startTestGateway, GATEHOUSE_BIN, type TestGateway } from '../support/gateway.ts';
import { run } from '../support/processes.ts';

let pg: PgCluster;
let work: string;
let storeUrl: string;
const gateways: TestGateway[] = [];

before(async () => {
  pg = await startPgCluster();
  await pg.sql('CREATE DATABASE gstore');
  storeUrl = `postgres://postgres@${pg.host}:${pg.port}/gstore`;
  work = mkdtempSync(path.join(tmpdir(), 'gatehouse-shared-'));
});

after(async () => {
  for (const gw of gateways) await gw.stop();
  await pg?.stop();
  rmSync(work, { recursive: true, force: true });
});

test('two gateways on one store: separate seal logs, one shared set of identities, everything verifies', async () => {
  // Each gateway registers its own preset admin token for the one admin identity of the store.
  // They share the credential key (GATEHOUSE_KEY), as they share the credentials it seals.
  const key = randomBytes(32).toString('hex');
  const [a, b] = await Promise.all(['a', 'b'].map((name) =>
    startTestGateway({ dataDir: path.join(work, name), args: ['--store', storeUrl], env: { GATEHOUSE_KEY: key } })));
  gateways.push(a, b);
  // Configuration made through one gateway is seen by the other: it is the same store.
  const token = await a.setupPostgres({ identity: 'shared-agent', connection: 'app', cluster: pg });
  for (const gw of [a, b, a, b, b]) {
    const r = await run('psql', [gw.dsn('app', 'shared-agent'), '-XAtc', `select '${gw === a ? 'via a' : 'via b'}'`], { env: { ...process.env, PGPASSWORD: token } });
    assert.equal(r.code, 0, r.stderr);
  }
  await a.stop();
  await b.stop();

  const keyFiles = ['a', 'b'].map((name) => {
    const dir = path.join(work, name, 'signing');
    return path.join(dir, readdirSync(dir).find((f) => f.endsWith('.pem'))!);
  });
  const verify = await run(process.execPath, [GATEHOUSE_BIN, 'verify', '--store', '--store-url', storeUrl, '--data-dir', path.join(work, 'a'),
    '--trusted-key', ...keyFiles], { timeoutMs: 30_000 });
  assert.equal(verify.code, 0, verify.stdout + verify.stderr);
  assert.match(verify.stdout, /5 sessions \(5 sealed and intact, 0 open\), 5 seals in the log: all intact/);

  // Trusting only gateway a's key, gateway b's seals are refused: the anchor matters.
  const onlyA = await run(process.execPath, [GATEHOUSE_BIN, 'verify', '--store', '--store-url', storeUrl, '--data-dir', path.join(work, 'a'),
    '--trusted-key', keyFiles[0]], { timeoutMs: 30_000 });
  assert.equal(onlyA.code, 1);
  assert.match(onlyA.stdout, /which is not a trusted key/);
});
