// Splits an SFTP byte stream (version 3, draft-ietf-secsh-filexfer-02) into packets without
// copying in the common case: a packet that lies inside one chunk is handed on as a view of it.
// Packets are `uint32 length, byte type, payload`; OpenSSH caps them at 256 KiB.

export const MAX_SFTP_PACKET = 256 * 1024 + 1024;

export class SftpFramer {
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private readonly onPacket: (packet: Buffer) => void;

  constructor(onPacket: (packet: Buffer) => void) {
    this.onPacket = onPacket;
  }

  /** Bytes the pending packet needs in all (known once its length field has arrived). */
  private need = 0;

  /** Bytes of an incomplete packet held from earlier chunks (0: the stream so far ends on a packet boundary). */
  get buffered(): number { return this.pendingBytes; }

  /**
   * Feeds bytes; calls onPacket for each complete packet (type byte first, length stripped). The
   * packet is a view whose underlying buffer holds its 4-byte length right before it (see `framed`).
   */
  push(chunk: Buffer): void {
    let buf = chunk;
    if (this.pendingBytes > 0) {
      this.pending.push(chunk);
      this.pendingBytes += chunk.length;
      if (this.need === 0) {
        if (this.pendingBytes < 4) return;
        const head = Buffer.concat(this.pending, this.pendingBytes);
        this.pending = [head];
        this.need = checkedLength(head.readUInt32BE(0)) + 4;
      }
      // Concatenate once, when the packet is complete: tiny chunks must not cost quadratic copying.
      if (this.pendingBytes < this.need) return;
      buf = Buffer.concat(this.pending, this.pendingBytes);
      this.pending = [];
      this.pendingBytes = 0;
      this.need = 0;
    }
    let off = 0;
    while (buf.length - off >= 4) {
      const len = checkedLength(buf.readUInt32BE(off));
      if (buf.length - off - 4 < len) break;
      this.onPacket(buf.subarray(off + 4, off + 4 + len));
      off += 4 + len;
    }
    if (off < buf.length) {
      // Copied: the rest must outlive the chunk, which its owner may reuse.
      const rest = Buffer.from(buf.subarray(off));
      this.pending = [rest];
      this.pendingBytes = rest.length;
      this.need = rest.length >= 4 ? checkedLength(rest.readUInt32BE(0)) + 4 : 0;
    }
  }
}

function checkedLength(len: number): number {
  if (len < 1 || len > MAX_SFTP_PACKET) throw new SftpProtocolError(`SFTP packet length ${len} is out of range`);
  return len;
}

export class SftpProtocolError extends Error {}

/** A packet handed on by SftpFramer with its length field again, as it was on the wire (a view, not a copy). */
export function framed(packet: Buffer): Buffer {
  return Buffer.from(packet.buffer, packet.byteOffset - 4, packet.length + 4);
}

/** A cursor over one packet's fields (SSH wire types). */
export class SftpReader {
  private readonly buf: Buffer;
  off: number;

  constructor(buf: Buffer, off = 0) {
    this.buf = buf;
    this.off = off;
  }

  byte(): number {
    if (this.off + 1 > this.buf.length) throw new SftpProtocolError('SFTP packet too short');
    return this.buf[this.off++]!;
  }

  uint32(): number {
    if (this.off + 4 > this.buf.length) throw new SftpProtocolError('SFTP packet too short');
    const v = this.buf.readUInt32BE(this.off);
    this.off += 4;
    return v;
  }

  uint64(): number {
    if (this.off + 8 > this.buf.length) throw new SftpProtocolError('SFTP packet too short');
    const v = Number(this.buf.readBigUInt64BE(this.off));
    this.off += 8;
    return v;
  }

  bytes(): Buffer {
    const len = this.uint32();
    if (this.off + len > this.buf.length) throw new SftpProtocolError('SFTP string runs past the packet');
    const v = this.buf.subarray(this.off, this.off + len);
    this.off += len;
    return v;
  }

  string(): string {
    return this.bytes().toString('utf8');
  }
}
