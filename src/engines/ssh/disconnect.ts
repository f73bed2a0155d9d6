// SSH_MSG_DISCONNECT with a description (RFC 4253 §11.1), so that the client is told why the
// gateway ended its session: OpenSSH prints "Received disconnect from …: 11: <description>".
// ssh2's own end() sends the message with an empty description, so the packet is built here with
// ssh2's packet writer (the same steps as its Protocol.disconnect); any failure falls back to end().
import { createRequire } from 'node:module';
import type { Connection } from 'ssh2';

const require = createRequire(import.meta.url);
const { sendPacket, writeUInt32BE } = require('ssh2/lib/protocol/utils.js') as {
  sendPacket(proto: unknown, packet: Buffer, bypass?: boolean): void;
  writeUInt32BE(buf: Buffer, value: number, offset: number): void;
};
const { MESSAGE, DISCONNECT_REASON } = require('ssh2/lib/protocol/constants.js') as {
  MESSAGE: { DISCONNECT: number }; DISCONNECT_REASON: { BY_APPLICATION: number };
};

interface PacketWriter { allocStartKEX: number; alloc(len: number, force?: boolean): Buffer; finalize(packet: Buffer, force?: boolean): Buffer }
interface Internals { _protocol?: { _packetRW?: { write: PacketWriter } }; _sock?: { writable?: boolean; end(): void } }

/** Printable ASCII only, bounded: the client shows it on the user's terminal. */
function sanitize(text: string): string {
  return text.replace(/[^\x20-\x7e]/g, '?').slice(0, 240);
}

export function disconnectWithReason(client: Connection, description: string): void {
  const { _protocol: proto, _sock: sock } = client as unknown as Internals;
  const writer = proto?._packetRW?.write;
  if (!proto || !writer || !sock?.writable) {
    client.end();
    return;
  }
  try {
    const desc = Buffer.from(sanitize(description), 'ascii');
    let p = writer.allocStartKEX;
    const packet = writer.alloc(1 + 4 + 4 + desc.length + 4, true);
    packet[p] = MESSAGE.DISCONNECT;
    writeUInt32BE(packet, DISCONNECT_REASON.BY_APPLICATION, ++p);
    writeUInt32BE(packet, desc.length, p += 4);
    packet.set(desc, p += 4);
    writeUInt32BE(packet, 0, p + desc.length); // language tag: none
    sendPacket(proto, writer.finalize(packet, true), true);
    sock.end();
  } catch {
    client.end();
  }
}
