// HTTPS_PROXY support for the connector's outbound tunnel: an HTTP CONNECT to the proxy, then
// TLS to the gateway inside it (the proxy sees only the tunnel's TLS bytes).
import net from 'node:net';

export function connectThroughProxy(proxyUrl: string, host: string, port: number, timeoutMs = 10_000): Promise<net.Socket> {
  const proxy = new URL(proxyUrl);
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: proxy.hostname, port: Number(proxy.port || 80) });
    const timer = setTimeout(() => { socket.destroy(); reject(new Error('proxy CONNECT timed out')); }, timeoutMs);
    const auth = proxy.username ? `Proxy-Authorization: Basic ${Buffer.from(`${decodeURIComponent(proxy.username)}:${decodeURIComponent(proxy.password)}`).toString('base64')}\r\n` : '';
    socket.once('connect', () => socket.write(`CONNECT ${host}:${port} HTTP/1.1\r\nHost: ${host}:${port}\r\n${auth}\r\n`));
    let head = Buffer.alloc(0);
    const onData = (chunk: Buffer): void => {
      head = Buffer.concat([head, chunk]);
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) { if (head.length > 16 * 1024) { socket.destroy(); reject(new Error('proxy answer too long')); } return; }
      socket.off('data', onData);
      clearTimeout(timer);
      const status = /^HTTP\/1\.[01] (\d{3})/.exec(head.toString('latin1', 0, end));
      if (!status || status[1] !== '200') { socket.destroy(); reject(new Error(`proxy refused CONNECT: ${head.toString('latin1', 0, Math.min(end, 200))}`)); return; }
      const rest = head.subarray(end + 4);
      socket.pause();
      if (rest.length > 0) socket.unshift(rest);
      resolve(socket);
    };
    socket.on('data', onData);
    socket.once('error', (err) => { clearTimeout(timer); reject(err); });
  });
}
