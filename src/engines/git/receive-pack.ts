// git-receive-pack, client side of the conversation after the ref advertisement:
//   [shallow <id>]...  <old> <new> <ref>\0<caps>  <old> <new> <ref>...  flush
//   [push options... flush]          (only when the client asked for "push-options")
//   [pack]                           (absent when every command is a delete)
// and the server's answer, report-status (v1 or v2), possibly inside side-band band 1.

import { FLUSH_PKT, GitProtocolError, PktLineReader, encodePktLine, pktText } from './pkt-line.ts';
import { capabilityValue, hashHexLength, isZeroId, type ObjectFormat } from './refs.ts';
import { SidebandDemuxer, encodeSideband, negotiatedSideband } from './sideband.ts';

export interface RefUpdate {
  ref: string;
  oldId: string;
  newId: string;
  kind: 'create' | 'delete' | 'update';
}

/** Kind of a command. A zero new id is a delete even when old is zero too (an unchecked delete). */
export function refUpdateKind(oldId: string, newId: string): RefUpdate['kind'] {
  if (isZeroId(newId)) return 'delete';
  if (isZeroId(oldId)) return 'create';
  return 'update';
}

export type PushPhase = 'commands' | 'push-options' | 'pack';

export interface PushRequestOptions {
  /** The object format the server advertised; ids of another length are refused. */
  objectFormat?: ObjectFormat;
  /** Cap on commands / push options kept, against a client that never ends the list. */
  maxCommands?: number;
  maxPushOptions?: number;
}

// A certificate holds one line per command plus a signature; this only stops an endless one.
const MAX_CERT_CHARS = 64 * 1024 * 1024;

const COMMAND = /^([0-9a-f]+) ([0-9a-f]+) (.+)$/;

export class PushRequestReader {
  private readonly reader = new PktLineReader();
  private readonly maxCommands: number;
  private readonly maxPushOptions: number;
  private objectFormat: ObjectFormat | null;
  private currentPhase: PushPhase = 'commands';
  private packChunks: Buffer[] = [];
  // push-cert block being read: its text so far, or null outside one
  private cert: string[] | null = null;
  private certEnded = false;
  private certChars = 0;
  private packExpected = false;

  readonly updates: RefUpdate[] = [];
  readonly capabilities: string[] = [];
  readonly pushOptions: string[] = [];
  /** "shallow <id>" lines: the pushing repository is shallow. */
  readonly shallow: string[] = [];
  /** The signed push certificate text (git push --signed), when one was sent. */
  pushCert: string | null = null;
  /** Pack bytes that have passed through push() (the caller may also stop pushing in 'pack'). */
  packBytes = 0;

  constructor(options: PushRequestOptions = {}) {
    this.objectFormat = options.objectFormat ?? null;
    this.maxCommands = options.maxCommands ?? 100_000;
    this.maxPushOptions = options.maxPushOptions ?? 1000;
  }

  get phase(): PushPhase {
    return this.currentPhase;
  }

  /** Whether a pack follows the command list (some update is not a delete). */
  get expectsPack(): boolean {
    return this.packExpected;
  }

  /** Whether the request is complete without a pack (only meaningful in the 'pack' phase). */
  get complete(): boolean {
    return this.currentPhase === 'pack' && !this.expectsPack;
  }

  push(chunk: Buffer): void {
    if (this.currentPhase === 'pack') {
      this.addPack(chunk);
      return;
    }
    this.reader.push(chunk);
    for (let line = this.reader.next(); line !== null; line = this.reader.next()) {
      if (line.kind !== 'data' && line.kind !== 'flush') {
        throw new GitProtocolError(`unexpected ${line.kind} packet in push request`);
      }
      if (this.currentPhase === 'commands') {
        if (line.kind === 'flush') this.endCommands();
        else this.commandLine(line.payload);
      } else if (line.kind === 'flush') {
        this.currentPhase = 'pack';
      } else {
        if (this.pushOptions.length >= this.maxPushOptions) throw new GitProtocolError(`more than ${this.maxPushOptions} push options`);
        this.pushOptions.push(pktText(line.payload));
      }
      if (this.currentPhase === 'pack') {
        for (const c of this.reader.takeRemainderChunks()) this.addPack(c);
        return;
      }
    }
  }

  /** Pack bytes received so far and not yet taken (views of the pushed chunks, no copies). */
  takePackBytes(): Buffer[] {
    const out = this.packChunks;
    this.packChunks = [];
    return out;
  }

  private addPack(chunk: Buffer): void {
    if (chunk.length === 0) return;
    if (!this.packExpected) throw new GitProtocolError('unexpected data after a push request that carries no pack');
    this.packBytes += chunk.length;
    this.packChunks.push(chunk);
  }

  private commandLine(payload: Buffer): void {
    if (this.cert !== null && !this.certEnded) {
      // Certificate lines keep their newline; git concatenates them verbatim.
      const text = payload.toString('utf8');
      if (text === 'push-cert-end\n') this.certEnded = true;
      else {
        this.certChars += text.length;
        if (this.certChars > MAX_CERT_CHARS) throw new GitProtocolError(`push certificate longer than ${MAX_CERT_CHARS} characters`);
        this.cert.push(text);
      }
      return;
    }
    let text = pktText(payload);
    const nul = text.indexOf('\0');
    if (nul >= 0) {
      // git honours a feature list on any command line (normally only the first carries one)
      for (const c of text.slice(nul + 1).split(' ')) {
        if (c !== '' && !this.capabilities.includes(c)) this.capabilities.push(c);
      }
      text = text.slice(0, nul);
      const fmt = capabilityValue(this.capabilities, 'object-format');
      if (fmt !== undefined) {
        if (fmt !== 'sha1' && fmt !== 'sha256') throw new GitProtocolError(`unsupported object-format ${fmt}`);
        if (this.objectFormat !== null && this.objectFormat !== fmt) {
          throw new GitProtocolError(`client object-format ${fmt} does not match ${this.objectFormat}`);
        }
        this.objectFormat = fmt;
      }
    }
    if (text.startsWith('shallow ')) {
      this.shallow.push(this.checkId(text.slice(8), text));
      return;
    }
    if (text === 'push-cert') {
      if (this.cert !== null) throw new GitProtocolError('push request carries two push certificates');
      this.cert = [];
      return;
    }
    if (this.cert !== null) throw new GitProtocolError('push request mixes a push certificate and unsigned commands');
    this.addCommand(text);
  }

  private addCommand(text: string): void {
    const m = COMMAND.exec(text);
    if (m === null) throw new GitProtocolError(`malformed push command ${JSON.stringify(text.slice(0, 200))}`);
    if (this.updates.length >= this.maxCommands) throw new GitProtocolError(`more than ${this.maxCommands} push commands`);
    const oldId = this.checkId(m[1], text);
    const newId = this.checkId(m[2], text);
    const ref = m[3];
    this.updates.push({ ref, oldId, newId, kind: refUpdateKind(oldId, newId) });
  }

  private checkId(id: string, text: string): string {
    const len = this.objectFormat === null ? id.length : hashHexLength(this.objectFormat);
    if ((len !== 40 && len !== 64) || id.length !== len || !/^[0-9a-f]+$/.test(id)) {
      throw new GitProtocolError(`malformed object id in push command ${JSON.stringify(text.slice(0, 200))}`);
    }
    if (this.objectFormat === null) this.objectFormat = len === 64 ? 'sha256' : 'sha1';
    return id;
  }

  private endCommands(): void {
    if (this.cert !== null) {
      // A flush inside the certificate ends the command list too (git's "true flush").
      this.pushCert = this.cert.join('');
      this.commandsFromCert(this.pushCert);
    }
    this.packExpected = this.updates.some((u) => u.kind !== 'delete');
    this.currentPhase = this.updates.length > 0 && this.capabilities.includes('push-options') ? 'push-options' : 'pack';
  }

  // The certificate's commands sit between its header (ended by a blank line) and the signature.
  private commandsFromCert(cert: string): void {
    const start = cert.indexOf('\n\n');
    if (start < 0) throw new GitProtocolError('malformed push certificate: no blank line after its header');
    let body = cert.slice(start + 2);
    const sig = body.search(/^-----BEGIN /m);
    if (sig >= 0) body = body.slice(0, sig);
    for (const line of body.split('\n')) if (line !== '') this.addCommand(line);
  }
}

export interface RefResult {
  ref: string;
  ok: boolean;
  reason?: string;
  /** report-status-v2 "option" lines that followed this ref's "ok" line. */
  options?: Record<string, string | true>;
}

export interface ReportStatus {
  /** "ok", or the unpacker's error text. */
  unpack: string;
  refs: RefResult[];
}

// Reasons end up on one pkt-line; git's own never contain a newline.
function oneLine(s: string): string {
  return s.replace(/[\r\n]+/g, ' ');
}

/**
 * report-status (or -v2) bytes as git-receive-pack writes them: "unpack <status>", then "ok <ref>"
 * or "ng <ref> <reason>" per command, then flush; inside side-band band 1 (followed by the flush
 * that ends the side-band stream) when the client negotiated side-band. Empty when the client did
 * not ask for report-status.
 */
export function buildReportStatus(
  capabilities: string[],
  unpack: 'ok' | string,
  results: Array<{ ref: string; ok: boolean; reason?: string }>,
): Buffer {
  if (!capabilities.includes('report-status') && !capabilities.includes('report-status-v2')) return Buffer.alloc(0);
  const parts: Buffer[] = [encodePktLine(`unpack ${oneLine(unpack)}\n`)];
  for (const r of results) {
    parts.push(encodePktLine(r.ok ? `ok ${r.ref}\n` : `ng ${r.ref} ${oneLine(r.reason || 'rejected')}\n`));
  }
  parts.push(FLUSH_PKT);
  const report = Buffer.concat(parts);
  const sideband = negotiatedSideband(capabilities);
  if (sideband === null) return report;
  return Buffer.concat([...encodeSideband(1, report, sideband), FLUSH_PKT]);
}

/**
 * Reads the server→client bytes after the push request: side-band (when negotiated) carrying the
 * report-status pkt-lines on band 1 and progress on band 2. `result` is set once the report's
 * flush arrives; `ended` once the whole response (including the side-band flush) has.
 */
export class ReportStatusReader {
  private readonly outer = new PktLineReader();
  private readonly inner: PktLineReader | null;
  private readonly demux: SidebandDemuxer | null;
  private readonly wantsReport: boolean;
  private partial: ReportStatus | null = null;

  result: ReportStatus | null = null;
  ended = false;
  /** Text of a band-3 (fatal) message from the server. */
  remoteError: string | null = null;

  constructor(capabilities: string[]) {
    this.wantsReport = capabilities.includes('report-status') || capabilities.includes('report-status-v2');
    const sideband = negotiatedSideband(capabilities) !== null;
    this.inner = sideband ? new PktLineReader() : null;
    this.demux = sideband ? new SidebandDemuxer() : null;
  }

  /** Recent band-2 progress text ("remote: ..." lines). */
  get progress(): string {
    return this.demux?.progress ?? '';
  }

  push(chunk: Buffer): void {
    if (this.ended) {
      if (chunk.length > 0) throw new GitProtocolError('unexpected data after the push report');
      return;
    }
    this.outer.push(chunk);
    for (let line = this.outer.next(); line !== null && !this.ended; line = this.outer.next()) {
      if (this.demux === null) {
        this.reportLine(line.kind === 'data' ? line.payload : null, line.kind);
        continue;
      }
      const ev = this.demux.push(line);
      if (ev.kind === 'flush') this.ended = true;
      else if (ev.kind === 'error') {
        this.remoteError = this.demux.errorMessage;
        this.ended = true;
      } else if (ev.kind === 'data') {
        this.inner!.push(ev.data);
        for (let l = this.inner!.next(); l !== null; l = this.inner!.next()) {
          this.reportLine(l.kind === 'data' ? l.payload : null, l.kind);
        }
      }
    }
    if (this.ended && this.outer.buffered > 0) throw new GitProtocolError('unexpected data after the push report');
  }

  private reportLine(payload: Buffer | null, kind: string): void {
    if (!this.wantsReport) throw new GitProtocolError('push report sent although the client did not ask for report-status');
    if (this.result !== null) {
      throw new GitProtocolError(`unexpected ${kind === 'data' ? 'data' : kind + ' packet'} after the push report`);
    }
    if (payload === null) {
      if (kind !== 'flush') throw new GitProtocolError(`unexpected ${kind} packet in push report`);
      if (this.partial === null) throw new GitProtocolError('push report ended before its "unpack" line');
      this.result = this.partial;
      if (this.demux === null) this.ended = true;
      return;
    }
    const text = pktText(payload);
    if (this.partial === null) {
      if (!text.startsWith('unpack ')) throw new GitProtocolError(`push report does not start with "unpack": ${JSON.stringify(text.slice(0, 200))}`);
      this.partial = { unpack: text.slice(7), refs: [] };
      return;
    }
    if (text.startsWith('ok ')) {
      this.partial.refs.push({ ref: text.slice(3), ok: true });
    } else if (text.startsWith('ng ')) {
      const sp = text.indexOf(' ', 3);
      if (sp < 0) this.partial.refs.push({ ref: text.slice(3), ok: false });
      else this.partial.refs.push({ ref: text.slice(3, sp), ok: false, reason: text.slice(sp + 1) });
    } else if (text.startsWith('option ')) {
      const last = this.partial.refs[this.partial.refs.length - 1];
      if (last === undefined || !last.ok) throw new GitProtocolError(`report-status option without an "ok" line: ${JSON.stringify(text.slice(0, 200))}`);
      const rest = text.slice(7);
      const sp = rest.indexOf(' ');
      (last.options ??= {})[sp < 0 ? rest : rest.slice(0, sp)] = sp < 0 ? true : rest.slice(sp + 1);
    } else {
      throw new GitProtocolError(`malformed push report line ${JSON.stringify(text.slice(0, 200))}`);
    }
  }
}
