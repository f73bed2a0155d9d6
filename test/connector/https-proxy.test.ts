// With HTTPS_PROXY set, the connector reaches the gateway's tunnel listener through an HTTP CONNECT
// proxy (a real one, run here with node:http): the proxy sees a CONNECT to the tunnel port, the
// tunnel's TCP connection is the proxy's, and sessions work through it.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { startPgCluster, type PgCluster } from '../support/pg-cluster.ts';
import { startTestGateway, type TestGateway } from '../support/gateway.ts';
import { connectAndLogin } from '../support/pg-wire.ts';
import { addViaConnection, enrollConnector, listConnectors, type ConnectorProcess } from '../support/connector.ts';

let cluster: PgCluster;
let gw: TestGateway;
let token: string;
let connector: ConnectorProcess | undefined;
let proxy: http.Server;
let proxyPort: number;
const connects: Array<{ target: string; auth: string | undefined; upstreamLocalPort: number }> = [];
const proxySockets = new Set<net.Socket>();

before(async () => {
  cluster = await startPgCluster();
  proxy = http.createServer((_req, res) => { res.writeHead(405); res.end(); });
  proxy.on('connect', (req: http.IncomingMessage, client: net.Socket, head: Buffer) => {
    const [host, port] = [req.url!.slice(0, req.url!.lastIndexOf(':')), Number(req.url!.slice(req.url!.lastIndexOf(':') + 1))];
    const upstream = net.connect({ host, port }, () => {
      connects.push({ target: req.url!, auth: req.headers['proxy-authorization'], upstreamLocalPort: upstream.localPort! });
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      if (head.length > 0) upstream.write(head);
      upstream.pipe(client);
      client.pipe(upstream);
    });
    proxySockets.add(client).add(upstream);
    const done = (): void => { client.destroy(); upstream.destroy(); proxySockets.delete(client); proxySockets.delete(upstream); };
    upstream.on('error', () => { client.end('HTTP/1.1 502 Bad Gateway\r\n\r\n'); done(); });
    client.on('error', done);
    upstream.on('close', done);
    client.on('close', done);
  });
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  proxyPort = (proxy.address() as net.AddressInfo).port;
  gw = await startTestGateway();
  token = await gw.setupPostgres({ identity: 'frank', connection: 'direct', cluster });
});

after(async () => {
  await connector?.kill('SIGKILL');
  for (const s of proxySockets) s.destroy();
  await new Promise<void>((resolve) => proxy.close(() => resolve()));
  await gw?.stop();
  await cluster?.stop();
});

test('HTTPS_PROXY: the tunnel goes through the proxy (CONNECT to the tunnel port) and sessions work', async () => {
  connector = await enrollConnector(gw, 'proxied', [`${cluster.host}:${cluster.port}`], {
    env: { HTTPS_PROXY: `http://user:p%40ss@127.0.0.1:${proxyPort}` },
  });
  assert.ok(connects.length >= 1, 'the proxy got a CONNECT');
  assert.equal(connects[0].target, `127.0.0.1:${gw.connectorPort}`, 'CONNECT to the gateway\'s tunnel port');
  assert.equal(connects[0].auth, `Basic ${Buffer.from('user:p@ss').toString('base64')}`, 'proxy credentials from the URL');

  // The tunnel the gateway sees is the proxy's outbound connection.
  const entry = (await listConnectors(gw)).find((c) => c.name === 'proxied')!;
  assert.equal(entry.status, 'connected');
  assert.equal(entry.address, `127.0.0.1:${connects.at(-1)!.upstreamLocalPort}`, `tunnel address ${entry.address} is the proxy's socket`);

  await addViaConnection(gw, { name: 'via_proxy', via: ['proxied'], host: cluster.host, port: cluster.port, identity: 'frank' });
  const { wire } = await connectAndLogin({ host: gw.pgHost, port: gw.pgPort, user: 'frank', database: 'via_proxy', password: token });
  assert.deepEqual((await wire.queryOk("select 'through the proxy' as v")).rows, [['through the proxy']]);
  const big = await wire.queryOk('select count(*), sum(length(r)) from (select repeat(\'p\', 1000) r from generate_series(1, 5000)) s');
  assert.deepEqual(big.rows, [['5000', '5000000']]);
  wire.terminate();
});

test('HTTPS_PROXY: after the proxied tunnel breaks, the connector reconnects through the proxy again', async () => {
  const before = connects.length;
  for (const s of proxySockets) s.destroy(); // cut the tunnel inside the proxy
  const deadline = Date.now() + 15_000;
  for (;;) {
    const entry = (await listConnectors(gw)).find((c) => c.name === 'proxied');
    if (connects.length > before && entry?.status === 'connected') break;
    if (Date.now() > deadline) throw new Error(`no reconnect through the proxy: ${JSON.stringify(entry)}, CONNECTs ${connects.length}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.equal(connects.at(-1)!.target, `127.0.0.1:${gw.connectorPort}`);
  const { wire } = await connectAndLogin({ host: gw.pgHost, port: gw.pgPort, user: 'frank', database: 'via_proxy', password: token });
  assert.deepEqual((await wire.queryOk('select 1')).rows, [['1']]);
  wire.terminate();
});
