// The HTTP API before authentication: a slowloris client (many sockets, each sending its request
// line and headers a byte every couple of seconds) is cut off once the headers timeout passes,
// and the gateway keeps answering a normal client meanwhile.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { startTestGateway, type TestGateway } from '../support/gateway.ts';

let gw: TestGateway;

before(async () => {
  // The defaults (10 s headers timeout), as a deployment runs them.
  gw = await startTestGateway();
});
after(async () => { await gw?.stop(); });

const SOCKETS = 200;
const BYTE_EVERY_MS = 2000;

/** One slowloris socket: resolves with how long the gateway let it live (ms). */
function slowClient(port: number): { closed: Promise<number>; stop(): void } {
  const started = Date.now();
  const request = 'GET /api/v1/health HTTP/1.1\r\nHost: gatehouse\r\nX-Padding: ' + 'a'.repeat(1000) + '\r\n\r\n';
  const socket = net.connect(port, '127.0.0.1');
  let i = 0;
  const timer = setInterval(() => { if (!socket.destroyed) socket.write(request[i++ % request.length]!); }, BYTE_EVERY_MS);
  socket.on('error', () => {});
  socket.on('data', () => {}); // a 408 answer, if any
  const closed = new Promise<number>((resolve) => socket.once('close', () => { clearInterval(timer); resolve(Date.now() - started); }));
  return { closed, stop: () => { clearInterval(timer); socket.destroy(); } };
}

test('slowloris sockets are cut off after the headers timeout while a normal client is served', { timeout: 60_000 }, async () => {
  const clients = Array.from({ length: SOCKETS }, () => slowClient(gw.httpPort));
  try {
    // While they trickle, a normal client is answered promptly, again and again.
    const latencies: number[] = [];
    const until = Date.now() + 6000;
    while (Date.now() < until) {
      const t0 = Date.now();
      const res = await fetch(`${gw.url}/api/v1/health`);
      assert.equal(res.status, 200);
      await res.text();
      latencies.push(Date.now() - t0);
      await new Promise((r) => setTimeout(r, 250));
    }
    assert.ok(Math.max(...latencies) < 1000, `health answered within 1 s during the flood (max ${Math.max(...latencies)} ms)`);

    // Every slow socket is closed by the gateway: 10 s headers timeout, checked every second.
    const horizon = new Promise<'alive'>((r) => setTimeout(() => r('alive'), 20_000));
    const lifetimes = await Promise.all(clients.map((c) => Promise.race([c.closed, horizon])));
    const alive = lifetimes.filter((l) => l === 'alive').length;
    assert.equal(alive, 0, `${alive} of ${SOCKETS} slowloris sockets still open after 20 s`);
    const longest = Math.max(...(lifetimes as number[]));
    assert.ok(longest >= 9000, `sockets were given the headers timeout, not cut at once (longest ${longest} ms)`);
    console.log(`slowloris: ${SOCKETS} sockets closed after ${Math.min(...(lifetimes as number[]))}–${longest} ms; health latency max ${Math.max(...latencies)} ms`);

    // And the gateway still serves.
    const res = await fetch(`${gw.url}/api/v1/health`);
    assert.equal(res.status, 200);
  } finally {
    for (const c of clients) c.stop();
  }
});

test('an idle keep-alive connection is closed after the keep-alive timeout', { timeout: 30_000 }, async () => {
  const socket = net.connect(gw.httpPort, '127.0.0.1');
  socket.on('error', () => {});
  let answer = '';
  socket.on('data', (d) => { answer += d.toString(); });
  await new Promise((r) => socket.once('connect', r));
  const t0 = Date.now();
  socket.write('GET /api/v1/health HTTP/1.1\r\nHost: gatehouse\r\n\r\n');
  const lived = await Promise.race([
    new Promise<number>((r) => socket.once('close', () => r(Date.now() - t0))),
    new Promise<number>((r) => setTimeout(() => r(-1), 20_000)),
  ]);
  socket.destroy();
  assert.match(answer, /^HTTP\/1\.1 200/);
  assert.ok(lived > 0 && lived < 12_000, `idle keep-alive connection closed within 12 s (lived ${lived} ms)`);
});

test('sockets that never send a byte are closed after the headers timeout too', { timeout: 40_000 }, async () => {
  const started = Date.now();
  const sockets = Array.from({ length: 100 }, () => {
    const s = net.connect(gw.httpPort, '127.0.0.1');
    s.on('error', () => {});
    return new Promise<number>((resolve) => s.once('close', () => resolve(Date.now() - started)));
  });
  const horizon = new Promise<'alive'>((r) => setTimeout(() => r('alive'), 20_000));
  const lifetimes = await Promise.all(sockets.map((p) => Promise.race([p, horizon])));
  assert.equal(lifetimes.filter((l) => l === 'alive').length, 0, 'every silent socket closed within 20 s');
  assert.ok(Math.min(...(lifetimes as number[])) >= 9000, 'not before the headers timeout');
  // A request that takes its time to be answered is not a silent connection: health still works.
  assert.equal((await fetch(`${gw.url}/api/v1/health`)).status, 200);
});
