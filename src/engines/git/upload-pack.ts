// git-upload-pack (fetch and clone): a recorder's view of the client's request, in protocol
// v0/v1 (want/have negotiation) or v2 (command=ls-refs / command=fetch), plus the pieces the
// gateway needs to ask a target itself (the fast-forward probe): the request it sends and a reader
// for the reply (ACK/NAK, then the pack multiplexed on side-band).

import { DELIM_PKT, FLUSH_PKT, GitProtocolError, PktLineReader, encodePktLine, pktText, type PktLine } from './pkt-line.ts';
import { capabilityValue, hasCapability, isObjectId, type ObjectFormat, type RefAdvertisement } from './refs.ts';
import { SidebandDemuxer } from './sideband.ts';

export interface UploadPackSummary {
  protocol: 0 | 2;
  /** v2 commands in the order sent ("ls-refs", "fetch", ...); empty for v0. */
  commands: string[];
  /** v0: features on the first want line; v2: capability lines of the commands (deduplicated). */
  capabilities: string[];
  /** Object ids asked for (the first `maxRecorded`); `wantCount` counts them all. */
  wants: string[];
  wantCount: number;
  /** v2 want-ref arguments. */
  wantRefs: string[];
  /** v2 ls-refs ref-prefix arguments. */
  refPrefixes: string[];
  /** "have" lines sent (negotiation rounds can send many, so only counted). */
  haves: number;
  /** "shallow" lines: the client's repository is shallow. */
  shallows: number;
  /** The last deepen request, e.g. "deepen 1", "deepen-since 1700000000", "deepen-not v1.0". */
  deepen: string | null;
  /** A partial-clone filter spec, e.g. "blob:none". */
  filter: string | null;
  /** The client sent "done". A v2 server may also end negotiation itself ("ready") without one. */
  done: boolean;
}

type V0State = 'wants' | 'haves' | 'ended';
type V2State = 'command' | 'capabilities' | 'arguments' | 'ended';

/**
 * Incremental reader for the client→server bytes of a fetch or clone. Only the current partial
 * pkt-line is ever buffered.
 */
export class UploadPackRequestReader {
  private readonly reader = new PktLineReader();
  private readonly maxRecorded: number;
  private v0: V0State = 'wants';
  private v2: V2State = 'command';
  private detected: boolean;
  readonly summary: UploadPackSummary;

  constructor(options: { protocol?: 0 | 2; maxRecorded?: number } = {}) {
    this.detected = options.protocol !== undefined;
    this.maxRecorded = options.maxRecorded ?? 10_000;
    this.summary = {
      protocol: options.protocol ?? 0,
      commands: [],
      capabilities: [],
      wants: [],
      wantCount: 0,
      wantRefs: [],
      refPrefixes: [],
      haves: 0,
      shallows: 0,
      deepen: null,
      filter: null,
      done: false,
    };
  }

  /**
   * The client finished its request: v0 after "done" (or a want-less flush); v2 only if it sent a
   * closing flush, which git does not (it just closes the connection, so EOF is the end there).
   */
  get ended(): boolean {
    return this.summary.protocol === 0 ? this.v0 === 'ended' : this.v2 === 'ended';
  }

  /** Bytes of an incomplete pkt-line held back (never more than one line's worth). */
  get buffered(): number {
    return this.reader.buffered;
  }

  push(chunk: Buffer): void {
    this.reader.push(chunk);
    for (let line = this.reader.next(); line !== null; line = this.reader.next()) {
      if (!this.detected) {
        this.detected = true;
        if (line.kind === 'data' && line.payload.toString('latin1', 0, 8) === 'command=') this.summary.protocol = 2;
      }
      if (this.summary.protocol === 2) this.lineV2(line);
      else this.lineV0(line);
    }
  }

  private want(id: string, text: string): void {
    if (!isObjectId(id)) throw new GitProtocolError(`malformed want line ${JSON.stringify(text.slice(0, 200))}`);
    this.summary.wantCount++;
    if (this.summary.wants.length < this.maxRecorded) this.summary.wants.push(id);
  }

  private addCapability(c: string): void {
    if (c !== '' && !this.summary.capabilities.includes(c) && this.summary.capabilities.length < 200) this.summary.capabilities.push(c);
  }

  // Lines common to v0's want section and v2's fetch arguments.
  private shallowOrDeepen(text: string): boolean {
    const s = this.summary;
    if (text.startsWith('shallow ')) s.shallows++;
    else if (text.startsWith('deepen ') || text.startsWith('deepen-since ') || text.startsWith('deepen-not ')) s.deepen = text;
    else if (text.startsWith('filter ')) s.filter = text.slice(7);
    else return false;
    return true;
  }

  private lineV0(line: PktLine): void {
    const s = this.summary;
    if (line.kind !== 'data') {
      if (line.kind !== 'flush') throw new GitProtocolError(`unexpected ${line.kind} packet in a v0 fetch request`);
      // A flush ends the want list (no wants: the client needs nothing) or one round of haves.
      if (this.v0 === 'wants') this.v0 = s.wantCount === 0 ? 'ended' : 'haves';
      return;
    }
    const text = pktText(line.payload);
    if (this.v0 === 'wants') {
      if (text.startsWith('want ')) {
        const sp = text.indexOf(' ', 5);
        this.want(sp < 0 ? text.slice(5) : text.slice(5, sp), text);
        if (sp >= 0 && s.wantCount === 1) for (const c of text.slice(sp + 1).split(' ')) this.addCapability(c);
      } else if (!this.shallowOrDeepen(text)) {
        throw new GitProtocolError(`unexpected line in the want list: ${JSON.stringify(text.slice(0, 200))}`);
      }
      return;
    }
    if (text.startsWith('have ')) s.haves++;
    else if (text === 'done') {
      s.done = true;
      this.v0 = 'ended';
    } else throw new GitProtocolError(`unexpected line in fetch negotiation: ${JSON.stringify(text.slice(0, 200))}`);
  }

  private lineV2(line: PktLine): void {
    const s = this.summary;
    if (this.v2 === 'command' || this.v2 === 'ended') {
      if (line.kind === 'flush') {
        this.v2 = 'ended'; // the client's closing flush
        return;
      }
      if (line.kind !== 'data') throw new GitProtocolError(`unexpected ${line.kind} packet where a v2 command was expected`);
      const text = pktText(line.payload);
      if (!text.startsWith('command=')) throw new GitProtocolError(`expected a v2 command, got ${JSON.stringify(text.slice(0, 200))}`);
      s.commands.push(text.slice(8));
      this.v2 = 'capabilities';
      return;
    }
    if (line.kind === 'flush') {
      this.v2 = 'command';
      return;
    }
    if (line.kind === 'delim') {
      if (this.v2 !== 'capabilities') throw new GitProtocolError('second delim packet in a v2 command');
      this.v2 = 'arguments';
      return;
    }
    if (line.kind !== 'data') throw new GitProtocolError(`unexpected ${line.kind} packet in a v2 command`);
    const text = pktText(line.payload);
    if (this.v2 === 'capabilities') {
      this.addCapability(text);
      return;
    }
    const command = s.commands[s.commands.length - 1];
    if (command === 'ls-refs') {
      if (text.startsWith('ref-prefix ') && s.refPrefixes.length < this.maxRecorded) s.refPrefixes.push(text.slice(11));
    } else if (command === 'fetch') {
      if (text.startsWith('want ')) this.want(text.slice(5), text);
      else if (text.startsWith('want-ref ')) {
        if (s.wantRefs.length < this.maxRecorded) s.wantRefs.push(text.slice(9));
      } else if (text.startsWith('have ')) s.haves++;
      else if (text === 'done') s.done = true;
      else this.shallowOrDeepen(text);
    }
    // Other arguments (peel, symrefs, thin-pack, ofs-delta, ...) and other commands carry nothing recorded.
  }
}

export interface ProbeOptions {
  /** 0 (the default) for a v0/v1 upload-pack; 2 when the target speaks protocol v2. */
  protocol?: 0 | 2;
  /** Ask for commits only ("filter tree:0"); only when the target advertised filter support. */
  filter?: boolean;
}

/** Probe options a target's advertisement allows: v2 when it advertised v2, filter when it offers it. */
export function probeOptionsFor(ad: RefAdvertisement): ProbeOptions {
  if (ad.version === 2) {
    const fetch = capabilityValue(ad.capabilities, 'fetch');
    return { protocol: 2, filter: fetch !== undefined && fetch.split(' ').includes('filter') };
  }
  return { protocol: 0, filter: hasCapability(ad.capabilities, 'filter') };
}

/**
 * The request asking a target for the history of `tips` that `have` does not already contain:
 * no thin-pack (every delta base is in the reply), ofs-delta, side-band-64k, no progress.
 */
export function buildUploadPackProbe(tips: string[], have: string, objectFormat: ObjectFormat, options: ProbeOptions = {}): Buffer {
  const wants = [...new Set(tips)];
  if (wants.length === 0) throw new Error('buildUploadPackProbe needs at least one tip');
  for (const id of [...wants, have]) {
    if (!isObjectId(id) || id.length !== (objectFormat === 'sha256' ? 64 : 40)) throw new Error(`not a ${objectFormat} object id: ${id}`);
  }
  const sendHave = !/^0+$/.test(have);
  const parts: Buffer[] = [];
  if (options.protocol === 2) {
    parts.push(encodePktLine('command=fetch\n'), encodePktLine('agent=gatehouse\n'));
    if (objectFormat !== 'sha1') parts.push(encodePktLine(`object-format=${objectFormat}\n`));
    parts.push(DELIM_PKT, encodePktLine('no-progress\n'), encodePktLine('ofs-delta\n'));
    for (const id of wants) parts.push(encodePktLine(`want ${id}\n`));
    if (options.filter) parts.push(encodePktLine('filter tree:0\n'));
    if (sendHave) parts.push(encodePktLine(`have ${have}\n`));
    parts.push(encodePktLine('done\n'), FLUSH_PKT);
    return Buffer.concat(parts);
  }
  let caps = 'side-band-64k ofs-delta no-progress';
  if (options.filter) caps += ' filter';
  if (objectFormat !== 'sha1') caps += ` object-format=${objectFormat}`;
  caps += ' agent=gatehouse';
  wants.forEach((id, i) => parts.push(encodePktLine(i === 0 ? `want ${id} ${caps}\n` : `want ${id}\n`)));
  if (options.filter) parts.push(encodePktLine('filter tree:0\n'));
  parts.push(FLUSH_PKT);
  if (sendHave) parts.push(encodePktLine(`have ${have}\n`));
  parts.push(encodePktLine('done\n'));
  return Buffer.concat(parts);
}

/**
 * Reads an upload-pack reply to a request that ended with "done": v0 ACK/NAK lines (or v2 section
 * headers up to "packfile"), then the pack on side-band band 1 until a flush. `pack` is set when
 * the reply is complete. A server "ERR" line or band-3 message throws GitProtocolError.
 */
export class UploadPackResponseReader {
  private readonly reader = new PktLineReader();
  private readonly demux = new SidebandDemuxer();
  private readonly protocol: 0 | 2;
  private readonly maxPackBytes: number;
  private inPack = false;
  private chunks: Buffer[] = [];
  private packLength = 0;

  pack: Buffer | null = null;
  readonly acks: string[] = [];
  nak = false;
  readonly shallow: string[] = [];

  constructor(options: { protocol?: 0 | 2; maxPackBytes?: number } = {}) {
    this.protocol = options.protocol ?? 0;
    this.maxPackBytes = options.maxPackBytes ?? 256 * 1024 * 1024;
  }

  get done(): boolean {
    return this.pack !== null;
  }

  get progress(): string {
    return this.demux.progress;
  }

  push(chunk: Buffer): void {
    if (this.pack !== null) {
      if (chunk.length > 0) throw new GitProtocolError('unexpected data after the upload-pack reply');
      return;
    }
    this.reader.push(chunk);
    for (let line = this.reader.next(); line !== null; line = this.reader.next()) {
      if (this.inPack) this.packLine(line);
      else this.headerLine(line);
      if (this.pack !== null) {
        if (this.reader.buffered > 0) throw new GitProtocolError('unexpected data after the upload-pack reply');
        return;
      }
    }
  }

  private headerLine(line: PktLine): void {
    if (line.kind !== 'data') {
      // v2 separates sections with delim; anything else before the pack means no pack is coming.
      if (this.protocol === 2 && line.kind === 'delim') return;
      throw new GitProtocolError(`upload-pack reply ended (${line.kind} packet) before any pack data`);
    }
    const p = line.payload;
    if (this.protocol === 0 && p.length > 0 && p[0] >= 1 && p[0] <= 3) {
      // v0: the first side-band packet starts the pack
      this.inPack = true;
      this.packLine(line);
      return;
    }
    const text = pktText(p);
    if (text.startsWith('ERR ')) throw new GitProtocolError(`target refused the probe: ${text.slice(4)}`);
    if (text === 'NAK') this.nak = true;
    else if (text.startsWith('ACK ')) this.acks.push(text.slice(4));
    else if (text.startsWith('shallow ') || text.startsWith('unshallow ')) this.shallow.push(text);
    else if (this.protocol === 2 && text === 'packfile') this.inPack = true;
    else if (this.protocol === 2 && (text === 'acknowledgments' || text === 'shallow-info' || text === 'wanted-refs' || text === 'ready')) {
      // sections the probe does not need
    } else if (this.protocol === 2 && /^[0-9a-f]{40,64} /.test(text)) {
      // wanted-refs entry
    } else {
      throw new GitProtocolError(`unexpected upload-pack reply line ${JSON.stringify(text.slice(0, 200))}`);
    }
  }

  private packLine(line: PktLine): void {
    const ev = this.demux.push(line);
    if (ev.kind === 'flush') {
      this.pack = this.chunks.length === 1 ? this.chunks[0] : Buffer.concat(this.chunks, this.packLength);
      this.chunks = [];
    } else if (ev.kind === 'error') {
      throw new GitProtocolError(`target error: ${ev.data.toString('utf8').trim()}`);
    } else if (ev.kind === 'data') {
      this.packLength += ev.data.length;
      if (this.packLength > this.maxPackBytes) throw new GitProtocolError(`probe reply exceeds ${this.maxPackBytes} bytes`);
      // A view of the pushed chunk; the single copy happens when the pack is joined.
      this.chunks.push(ev.data);
    }
  }
}
