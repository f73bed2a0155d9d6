// How the gateway reaches a target. The built-in connector dials directly; a connection that
// names connectors (`--via`) goes through one of their outbound tunnels. Engines only see a
// Duplex either way.
import net from 'node:net';
import type { Duplex } from 'node:stream';

export interface Target {
  host: string;
  port: number;
  /** Connectors that may carry the connection; empty or absent: dial directly. */
  via?: string[];
}

export interface Dialer {
  dial(target: Target, timeoutMs: number): Promise<Duplex>;
}

export function dialDirect(target: Target, timeoutMs: number): Promise<Duplex> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: target.host, port: target.port, noDelay: true });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`timed out connecting to ${target.host}:${target.port}`));
    }, timeoutMs);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.off('error', reject);
      resolve(socket);
    });
    socket.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

/** Direct for connections without connectors; otherwise through a tunnel of one of them. */
export class RoutingDialer implements Dialer {
  private readonly tunnels: { open(connectors: string[], target: { host: string; port: number }, timeoutMs: number): Promise<Duplex> };

  constructor(tunnels: RoutingDialer['tunnels']) {
    this.tunnels = tunnels;
  }

  dial(target: Target, timeoutMs: number): Promise<Duplex> {
    if (!target.via || target.via.length === 0) return dialDirect(target, timeoutMs);
    return this.tunnels.open(target.via, { host: target.host, port: target.port }, timeoutMs);
  }
}
