// Side-band multiplexing: once negotiated, every pkt-line's first payload byte names a band —
// 1 data (pack or report-status), 2 progress text shown as "remote: ...", 3 a fatal error message.

import { GitProtocolError, MAX_PKT_LEN, type PktLine } from './pkt-line.ts';

export type SidebandMode = 'side-band-64k' | 'side-band';

/** Largest band payload per packet: the pkt-line limit minus header and band byte. */
export function sidebandChunkSize(mode: SidebandMode): number {
  return (mode === 'side-band-64k' ? MAX_PKT_LEN : 1000) - 5;
}

/** The sideband mode the client asked for in its capabilities, if any (64k wins, as in git). */
export function negotiatedSideband(capabilities: Iterable<string>): SidebandMode | null {
  let mode: SidebandMode | null = null;
  for (const c of capabilities) {
    if (c === 'side-band-64k') return c;
    if (c === 'side-band') mode = c;
  }
  return mode;
}

const HEX = '0123456789abcdef';

/** Whole pkt-lines carrying `data` on `band`; empty data yields no packet (as git's send_sideband). */
export function encodeSideband(band: 1 | 2 | 3, data: Buffer, mode: SidebandMode = 'side-band-64k'): Buffer[] {
  const max = sidebandChunkSize(mode);
  const out: Buffer[] = [];
  for (let off = 0; off < data.length; off += max) {
    const n = Math.min(max, data.length - off);
    const len = n + 5;
    const pkt = Buffer.allocUnsafe(len);
    pkt[0] = HEX.charCodeAt((len >> 12) & 15);
    pkt[1] = HEX.charCodeAt((len >> 8) & 15);
    pkt[2] = HEX.charCodeAt((len >> 4) & 15);
    pkt[3] = HEX.charCodeAt(len & 15);
    pkt[4] = band;
    data.copy(pkt, 5, off, off + n);
    out.push(pkt);
  }
  return out;
}

export type SidebandEvent =
  | { kind: 'data'; data: Buffer } // band 1
  | { kind: 'progress'; data: Buffer } // band 2
  | { kind: 'error'; data: Buffer } // band 3
  | { kind: 'flush' };

const FLUSH_EVENT: SidebandEvent = Object.freeze({ kind: 'flush' });

/** Demultiplexes one pkt-line. The returned data is a view of the line's payload (no copy). */
export function demuxSideband(line: PktLine): SidebandEvent {
  if (line.kind === 'flush') return FLUSH_EVENT;
  if (line.kind !== 'data') throw new GitProtocolError(`unexpected ${line.kind} packet in side-band stream`);
  const p = line.payload;
  if (p.length === 0) throw new GitProtocolError('side-band packet without a band byte');
  const data = p.subarray(1);
  switch (p[0]) {
    case 1: return { kind: 'data', data };
    case 2: return { kind: 'progress', data };
    case 3: return { kind: 'error', data };
    default: throw new GitProtocolError(`invalid side-band ${p[0]} (packet starts ${JSON.stringify(p.toString('latin1', 0, Math.min(p.length, 16)))})`);
  }
}

/**
 * Stateful demuxer that also keeps the most recent progress text (bounded), so a recorder can
 * note what the remote said without holding all of it.
 */
export class SidebandDemuxer {
  private progressTail = '';
  private readonly keepProgress: number;
  dataBytes = 0;
  progressBytes = 0;
  errorMessage: string | null = null;

  constructor(options: { keepProgressChars?: number } = {}) {
    this.keepProgress = options.keepProgressChars ?? 4096;
  }

  push(line: PktLine): SidebandEvent {
    const ev = demuxSideband(line);
    if (ev.kind === 'data') this.dataBytes += ev.data.length;
    else if (ev.kind === 'progress') {
      this.progressBytes += ev.data.length;
      if (this.keepProgress > 0) {
        this.progressTail += ev.data.toString('utf8');
        if (this.progressTail.length > this.keepProgress) this.progressTail = this.progressTail.slice(-this.keepProgress);
      }
    } else if (ev.kind === 'error') {
      this.errorMessage = (this.errorMessage ?? '') + ev.data.toString('utf8');
    }
    return ev;
  }

  /** The last progress text received (up to keepProgressChars). */
  get progress(): string {
    return this.progressTail;
  }
}
