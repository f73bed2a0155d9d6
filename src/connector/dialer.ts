// How the gateway reaches a target. The built-in connector dials directly; a remote connector
// (outbound tunnel) implements the same interface, so engines never know which one they use.
import net from 'node:net';
import type { Duplex } from 'node:stream';

export interface Target { host: string; port: number }

export interface Dialer {
  dial(target: Target, timeoutMs: number): Promise<Duplex>;
}

export class DirectDialer implements Dialer {
  dial(target: Target, timeoutMs: number): Promise<Duplex> {
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
}
