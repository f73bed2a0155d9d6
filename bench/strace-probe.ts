// Probe: system calls per pgbench transaction through the gateway (strace -c -f on the gateway).
import { spawn } from 'node:child_process';
import { startPgCluster, PG_BIN, PG_TEST_USERS } from '../test/support/pg-cluster.ts';
import { startTestGateway } from '../test/support/gateway.ts';
import { run } from '../test/support/processes.ts';
import path from 'node:path';

const cluster = await startPgCluster();
await run(path.join(PG_BIN, 'pgbench'), ['-i', '-s', '2', '-h', cluster.host, '-p', String(cluster.port), '-U', 'postgres', 'app'], {});
await cluster.sql('GRANT SELECT ON ALL TABLES IN SCHEMA public TO scram_user', 'app');
const gw = await startTestGateway({ env: { GATEHOUSE_LOG_LEVEL: 'info' } });
const token = await gw.setupPostgres({ identity: 'bench', connection: 'bench', cluster, user: PG_TEST_USERS.scram.user, sslmode: 'disable' });
const strace = spawn('strace', ['-c', '-f', '-p', String(gw.process.pid), '-o', '/tmp/st/strace.txt'], { stdio: 'inherit' });
await new Promise((r) => setTimeout(r, 1000));
const r = await run(path.join(PG_BIN, 'pgbench'), ['-S', '-n', '-c', '8', '-j', '2', '-T', '5', '-M', process.env.MODE ?? 'simple', '-h', gw.pgHost, '-p', String(gw.pgPort), '-U', 'bench', 'bench'], { env: { ...process.env, PGPASSWORD: token, PGSSLMODE: 'disable' } });
console.log(r.code, (r.stdout + r.stderr).split('\n').filter((l) => /tps|processed|rror/.test(l)).join('\n'));
strace.kill('SIGINT');
await new Promise((r) => strace.once('exit', r));
await gw.stop();
await cluster.stop();
