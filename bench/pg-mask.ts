// `npm run bench:pg-mask`: what result masking costs, through one gateway, interleaved so that load
// from elsewhere falls on both sides alike.
//   1. pgbench -S as an identity a mask rule applies to (on a column pgbench does not read, with
//      every detector on), against the same run as an identity no mask rule applies to (zero-copy).
//   2. A large text result (BENCH_MASK_MB, default 128 MB) read with psql, detectors on, against
//      the same query unmasked: hex digests, prose, and rows whose every value of one column is
//      masked by a column rule (each row rewritten).
// Environment: BENCH_SECONDS (pgbench seconds per run, default 8), BENCH_ROUNDS (default 3).
import path from 'node:path';
import { mkdtempSync, readFileSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { PG_BIN, startPgCluster } from '../test/support/pg-cluster.ts';
import { startTestGateway } from '../test/support/gateway.ts';
import { run } from '../test/support/processes.ts';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 8);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const MB = Number(process.env.BENCH_MASK_MB ?? 128);

const POLICY = `
rules:
  - name: pii-for-agents
    when: { kinds: [agent] }
    action: mask
    mask:
      columns: ["public.users.email", "*.ssn"]
      detectors: [aws, github, gitlab, slack, stripe, google_api, private_key, jwt, url_credentials, credit_card]
`;

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** CPU seconds the gateway process has used (user + system), from /proc. */
function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

const dir = mkdtempSync(path.join(tmpdir(), 'gatehouse-bench-mask-'));
const cluster = await startPgCluster();
const gw = await startTestGateway();
try {
  await cluster.sql('CREATE TABLE users (id int, email text, ssn text); GRANT ALL ON users TO scram_user; GRANT CREATE ON SCHEMA public TO scram_user;', 'app');
  const init = await run(path.join(PG_BIN, 'pgbench'), ['-i', '-q', '-s', '1', '-h', cluster.host, '-p', String(cluster.port), '-U', 'scram_user', 'app'],
    { env: { ...process.env, PGPASSWORD: 'scram-secret', PGSSLMODE: 'disable' }, timeoutMs: 300_000 });
  if (init.code !== 0) throw new Error(`pgbench -i: ${init.stderr}`);
  const agent = await gw.setupPostgres({ identity: 'bot', connection: 'app', cluster, kind: 'agent' });
  await gw.cliOk(['identity', 'add', 'alice', '--kind', 'human']);
  const human = (await gw.cliOk(['token', 'issue', 'alice', '--ttl', '2h'])).trim().split('\n').pop()!;
  await gw.cliOk(['grant', 'alice', 'app']);
  writeFileSync(path.join(dir, 'policy.yaml'), POLICY);
  await gw.cliOk(['policy', 'apply', path.join(dir, 'policy.yaml')]);
  const who = { masked: { identity: 'bot', token: agent }, plain: { identity: 'alice', token: human } } as const;

  const pid = gw.process.pid!;
  const pgbench = async (w: keyof typeof who): Promise<number> => {
    const c0 = cpuSeconds(pid);
    const r = await run(path.join(PG_BIN, 'pgbench'), ['-S', '-n', '-c', '8', '-j', '2', '-T', String(SECONDS), '-h', gw.pgHost, '-p', String(gw.pgPort), '-U', who[w].identity, 'app'],
      { env: { ...process.env, PGPASSWORD: who[w].token, PGSSLMODE: 'require' }, timeoutMs: SECONDS * 1000 + 60_000 });
    const tps = /^tps = ([\d.]+)/m.exec(r.stdout);
    if (r.code !== 0 || !tps) throw new Error(`pgbench: ${r.stderr}`);
    const tx = Number(/^number of transactions actually processed: (\d+)/m.exec(r.stdout)![1]);
    cpuPerTx[w]!.push(((cpuSeconds(pid) - c0) / tx) * 1e6);
    return Number(tps[1]);
  };
  const rows = Math.ceil((MB * 1024 * 1024) / 330);
  // Hex digests (many digit runs and "acca"s: the card and AWS prefilters pass, so values are scanned) and prose (they do not).
  const queries = {
    hex: `select i, repeat(md5(i::text), 10) as t from generate_series(1, ${rows}) i`,
    prose: `select i, repeat('the quick brown fox jumps over the lazy dog ', 7) || i as t from generate_series(1, ${rows}) i`,
    // Every row has a column the rule masks (an expression named email): each row is rewritten.
    'masked-column': `select i, repeat('x', 300) || i || '@example.com' as email from generate_series(1, ${rows}) i`,
  };
  let query = queries.hex;
  const large = async (w: keyof typeof who): Promise<number> => {
    const c0 = cpuSeconds(pid);
    const t0 = process.hrtime.bigint();
    const r = await run('psql', [gw.dsn('app', who[w].identity), '-XAtq', '-o', '/dev/null', '-c', query], { env: { ...process.env, PGPASSWORD: who[w].token }, timeoutMs: 600_000 });
    if (r.code !== 0) throw new Error(`psql: ${r.stderr}`);
    cpuLarge[w]!.push(cpuSeconds(pid) - c0);
    return Number(process.hrtime.bigint() - t0) / 1e9;
  };

  const order = (i: number): Array<keyof typeof who> => (i % 2 === 0 ? ['plain', 'masked'] : ['masked', 'plain']);
  const tps: Record<string, number[]> = { masked: [], plain: [] };
  const cpuPerTx: Record<string, number[]> = { masked: [], plain: [] };
  const cpuLarge: Record<string, number[]> = { masked: [], plain: [] };
  const secs: Record<string, number[]> = { masked: [], plain: [] };
  for (let i = 0; i < ROUNDS; i++) {
    for (const w of order(i)) {
      tps[w]!.push(await pgbench(w));
      console.log(`round ${i + 1} pgbench -S ${w}: ${tps[w]!.at(-1)!.toFixed(0)} TPS, gateway CPU ${cpuPerTx[w]!.at(-1)!.toFixed(0)} µs/tx`);
    }
  }
  const largeLines: string[] = [];
  for (const [kind, q] of Object.entries(queries)) {
    query = q;
    secs.masked = []; secs.plain = []; cpuLarge.masked = []; cpuLarge.plain = [];
    for (let i = 0; i < ROUNDS; i++) {
      for (const w of order(i)) {
        secs[w]!.push(await large(w));
        console.log(`round ${i + 1} ${MB} MB ${kind} result ${w}: ${secs[w]!.at(-1)!.toFixed(2)} s, gateway CPU ${cpuLarge[w]!.at(-1)!.toFixed(2)} s`);
      }
    }
    const [sm, sp] = [median(secs.masked!), median(secs.plain!)];
    const [lm, lp] = [median(cpuLarge.masked!), median(cpuLarge.plain!)];
    largeLines.push(`${MB} MB ${kind} text result through psql, medians of ${ROUNDS}: unmasked ${sp.toFixed(2)} s (${(MB / sp).toFixed(0)} MB/s, gateway CPU ${lp.toFixed(2)} s), masked ${sm.toFixed(2)} s (${(MB / sm).toFixed(0)} MB/s, gateway CPU ${lm.toFixed(2)} s)`);
  }
  const [tm, tp] = [median(tps.masked!), median(tps.plain!)];
  const [um, up] = [median(cpuPerTx.masked!), median(cpuPerTx.plain!)];
  console.log(`\npgbench -S, 8 clients, ${SECONDS} s, medians of ${ROUNDS}: no mask rule ${tp.toFixed(0)} TPS (${up.toFixed(0)} µs gateway CPU/tx), mask rule on a column it does not read + all detectors ${tm.toFixed(0)} TPS (${um.toFixed(0)} µs/tx): TPS ${((tm / tp - 1) * 100).toFixed(1)}%, CPU/tx ${((um / up - 1) * 100).toFixed(1)}%`);
  for (const l of largeLines) console.log(l);
} finally {
  await gw.stop();
  await cluster.stop();
  rmSync(dir, { recursive: true, force: true });
}
