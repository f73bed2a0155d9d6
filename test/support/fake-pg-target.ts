// A hostile PostgreSQL "target" for tests of what the gateway does when the server it logs in to
// misbehaves: it answers SSLRequest with 'N' and then runs a scripted authentication exchange,
// recording what the gateway sent (so a test can tell whether a credential left the gateway).
import net from 'node:net';

export interface FakeTarget {
  host: string;
  port: number;
  /** Every message body the gateway sent after its startup packet, with its type byte. */
  received: Array<{ type: string; body: Buffer }>;
  close(): Promise<void>;
}

export type Script = (conn: { send(type: string, body: Buffer): void; next(): Promise<{ type: string; body: Buffer }>; end(): void }) => Promise<void>;

export function authRequest(code: number, extra: Buffer = Buffer.alloc(0)): Buffer {
  const b = Buffer.alloc(4);
  b.writeInt32BE(code);
  return Buffer.concat([b, extra]);
}

export async function startFakeTarget(script: Script): Promise<FakeTarget> {
  const received: FakeTarget['received'] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    let buf = Buffer.alloc(0);
    let started = false;
    let waiter: (() => void) | null = null;
    socket.on('data', (d: Buffer) => { buf = Buffer.concat([buf, d]); waiter?.(); });
    const need = async (n: number): Promise<void> => {
      while (buf.length < n) {
        if (socket.destroyed) throw new Error('closed');
        await new Promise<void>((r) => { waiter = r; setTimeout(r, 100); });
        waiter = null;
      }
    };
    const take = (n: number): Buffer => { const out = buf.subarray(0, n); buf = buf.subarray(n); return out; };
    const conn = {
      send(type: string, body: Buffer) {
        const head = Buffer.alloc(5);
        head.write(type, 0, 'latin1');
        head.writeInt32BE(body.length + 4, 1);
        socket.write(Buffer.concat([head, body]));
      },
      async next() {
        await need(5);
        const type = String.fromCharCode(buf[0]);
        const len = buf.readInt32BE(1);
        await need(1 + len);
        const frame = take(1 + len);
        const m = { type, body: Buffer.from(frame.subarray(5)) };
        received.push(m);
        return m;
      },
      end() { socket.end(); },
    };
    void (async () => {
      // Startup: possibly an SSLRequest (declined), then the startup packet.
      while (!started) {
        await need(8);
        const len = buf.readInt32BE(0);
        await need(len);
        const packet = take(len);
        if (packet.readInt32BE(4) === 80877103) { socket.write('N'); continue; }
        started = true;
      }
      await script(conn);
    })().catch(() => socket.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const addr = server.address() as net.AddressInfo;
  return {
    host: '127.0.0.1', port: addr.port, received,
    close: () => new Promise<void>((resolve) => { for (const s of sockets) s.destroy(); server.close(() => resolve()); }),
  };
}
