// Connections that never send a request. Node's headers timeout starts with the first byte of a
// request, so a client can open sockets and send nothing at all, holding each for ever (a
// slowloris that does not even trickle). Such a connection is closed once it has been silent for
// `ms`; the timer stops when its first request arrives (a request's own time is bounded by the
// headers and request timeouts, and a Git push held for approval may wait quietly for minutes).
import type { Server as HttpServer } from 'node:http';
import type { Socket } from 'node:net';
import tls from 'node:tls';

export function closeSilentConnections(server: HttpServer, ms: number): void {
  const silent = function (this: Socket): void { this.destroy(); };
  // Over TLS the request arrives on the TLS socket; a TCP client that never finishes the
  // handshake is the TLS server's handshake timeout's business.
  server.on(server instanceof tls.Server ? 'secureConnection' : 'connection', (socket: Socket) => {
    socket.setTimeout(ms);
    socket.once('timeout', silent);
  });
  server.on('request', (req: { socket: Socket }) => {
    if (req.socket.listeners('timeout').includes(silent)) {
      req.socket.off('timeout', silent);
      req.socket.setTimeout(0);
    }
  });
}
